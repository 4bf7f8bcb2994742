-- Tokens issued and not yet consumed. Only the SHA-256 of a token is kept.
CREATE TABLE IF NOT EXISTS tokens (
  token_hash  BINARY(32)   NOT NULL,
  customer_id VARCHAR(64)  NOT NULL,
  issue_time  DATETIME(6)  NOT NULL,
  expire_time DATETIME(6)  NOT NULL,
  PRIMARY KEY (token_hash),
  KEY tokens_expire (expire_time),
  KEY tokens_customer (customer_id, expire_time)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS products (
  sku              VARCHAR(64)  NOT NULL,
  name             VARCHAR(200) NOT NULL,
  unit_price_minor BIGINT       NOT NULL,
  currency         CHAR(3)      NOT NULL,
  stock            BIGINT       NOT NULL,
  update_time      DATETIME(6)  NOT NULL,
  PRIMARY KEY (sku),
  CONSTRAINT products_stock_nonneg CHECK (stock >= 0)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- token_hash is UNIQUE: a second line of defence against two orders per token.
CREATE TABLE IF NOT EXISTS orders (
  id          CHAR(36)    CHARACTER SET ascii NOT NULL,
  customer_id VARCHAR(64) NOT NULL,
  token_hash  BINARY(32)  NOT NULL,
  total_minor BIGINT      NOT NULL,
  currency    CHAR(3)     NOT NULL,
  status      TINYINT     NOT NULL,
  create_time DATETIME(6) NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY orders_token (token_hash),
  KEY orders_customer_time (customer_id, create_time, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS order_lines (
  order_id         CHAR(36)    CHARACTER SET ascii NOT NULL,
  line_no          SMALLINT    NOT NULL,
  sku              VARCHAR(64) NOT NULL,
  quantity         BIGINT      NOT NULL,
  unit_price_minor BIGINT      NOT NULL,
  line_total_minor BIGINT      NOT NULL,
  PRIMARY KEY (order_id, line_no)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The first outcome of every consumed token, replayed to retries: the order
-- snapshot or the stored rejection, plus the fingerprint of the request.
CREATE TABLE IF NOT EXISTS outcomes (
  token_hash   BINARY(32)   NOT NULL,
  customer_id  VARCHAR(64)  NOT NULL,
  request_hash BINARY(32)   NOT NULL,
  order_id     CHAR(36)     CHARACTER SET ascii NULL,
  rejection    VARCHAR(32)  CHARACTER SET ascii NULL,
  body         MEDIUMBLOB   NOT NULL,
  create_time  DATETIME(6)  NOT NULL,
  PRIMARY KEY (token_hash),
  KEY outcomes_create (create_time)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
