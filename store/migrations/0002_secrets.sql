-- Secrets every replica must share, such as the HMAC key of ListOrders page
-- tokens. Each is created once, on first use, by whichever replica gets there
-- first (INSERT IGNORE), and read by all: replicas agree without any
-- configuration. Replicas keep a secret in memory once read: deleting its row
-- and restarting them rotates it (what the old one signed stops verifying).
CREATE TABLE IF NOT EXISTS secrets (
  name        VARCHAR(64)  CHARACTER SET ascii NOT NULL,
  value       VARBINARY(64) NOT NULL,
  create_time DATETIME(6)  NOT NULL,
  PRIMARY KEY (name)
) ENGINE=InnoDB;
