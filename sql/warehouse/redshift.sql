-- The province job's warehouse table (redshift), as tally creates it when missing.
-- Regenerate: tally warehouse ddl --job province_sales --dialect redshift
CREATE TABLE IF NOT EXISTS "store_item_daily_sales" (
    "province" VARCHAR(1024),
    "store_id" VARCHAR(1024) NOT NULL,
    "item_id" VARCHAR(1024) NOT NULL,
    "trans_date" DATE NOT NULL,
    "sale_amount" DECIMAL(18,2),
    "tax_amount" DECIMAL(18,2),
    "discount_amount" DECIMAL(18,2),
    "source_file" VARCHAR(1024),
    "source_time" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    PRIMARY KEY ("store_id", "item_id", "trans_date")
)
DISTSTYLE KEY DISTKEY ("store_id")
COMPOUND SORTKEY ("trans_date", "store_id", "item_id");
