-- The province job's warehouse table (postgres), as tally creates it when missing.
-- Regenerate: tally warehouse ddl --job province_sales --dialect postgres
CREATE TABLE IF NOT EXISTS "store_item_daily_sales" (
    "province" TEXT,
    "store_id" TEXT NOT NULL,
    "item_id" TEXT NOT NULL,
    "trans_date" DATE NOT NULL,
    "sale_amount" DECIMAL(18,2),
    "tax_amount" DECIMAL(18,2),
    "discount_amount" DECIMAL(18,2),
    "source_file" TEXT,
    "source_time" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    PRIMARY KEY ("store_id", "item_id", "trans_date")
);
