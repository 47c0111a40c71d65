-- The province job's warehouse table (sqlite), as tally creates it when missing.
-- Regenerate: tally warehouse ddl --job province_sales --dialect sqlite
CREATE TABLE IF NOT EXISTS "store_item_daily_sales" (
    "province" TEXT,
    "store_id" TEXT NOT NULL,
    "item_id" TEXT NOT NULL,
    "trans_date" TEXT NOT NULL,
    "sale_amount" TEXT,
    "tax_amount" TEXT,
    "discount_amount" TEXT,
    "source_file" TEXT,
    "source_time" TEXT NOT NULL,
    "updated_at" TEXT NOT NULL,
    PRIMARY KEY ("store_id", "item_id", "trans_date")
) WITHOUT ROWID;
