/* tally:job
# The province job: one row per (store, item, transaction date) with the day's sale, tax and
# discount totals, from the newest cumulative file of each store.
name = "province_sales"
description = "Daily sale, tax and discount totals per store and item for one province"

# Parameters the SQL refers to as $name; `tally run --province IL` sets $province.
params = ["province"]

[input]
# The table name the SQL reads, the files that make it ({param} is substituted), and their layout
# (see jobs/layouts.toml). Every input row also carries source_file, source_time and source_rank
# (the file's rank, oldest first); the table <table>_files lists the files with the same three.
table = "transactions"
files = ["{province}-*.csv", "{province}-*.parquet"]
layout = "pos_transactions"
# Each file is one store's: the files are read in ranges of stores, one range per core, so the
# GROUP BY below (whose key starts with store_id) is made within each core, with no exchange of rows
# between cores. Every row is checked; a file holding several stores makes the run read again
# without ranges, never a wrong result.
file_key = "store_id"

[output]
# One row per record key. When two runs deliver the same key, the row with the larger
# precombine value wins (an older source never overwrites a newer one).
record_key = ["store_id", "item_id", "trans_date"]
partition_field = "trans_date"
precombine_field = "source_time"

[sinks]
hudi_table = "store_item_daily_sales"
hive_style_partitioning = false
warehouse_table = "store_item_daily_sales"
*/

-- Stores send cumulative files: when several files carry the same store-item-day, the newest
-- file's totals win (newest by source time, then by file name). Each input row carries its file's
-- source_rank (1 for the oldest file of the run, up to the number of files for the newest), and
-- newest_sum(amount, source_rank) sums the amounts of a key's newest file only: one hash
-- aggregation per store-item-day, no intermediate row per file and no sort by file.
-- Starting from all three codes (not from sales, as the reference implementation did) keeps
-- item-days that have tax or discount but no sale. All three sums of a key come from the same
-- file, the one max(source_rank) names: a row of another code is NULL to a category's CASE (input
-- amounts are never NULL) but still counts for its file's rank, so a category missing from the
-- newest file sums to NULL, and COALESCE makes it 0.00. (A CASE without ELSE only marks rows NULL;
-- an ELSE 0.00 would copy every amount into a new column, three times.)
WITH newest AS (
    SELECT
        store_id,
        item_id,
        trans_date,
        newest_sum(CASE WHEN code = 4 THEN amount END, source_rank) AS sale_amount,
        newest_sum(CASE WHEN code = 5 THEN amount END, source_rank) AS tax_amount,
        newest_sum(CASE WHEN code = 6 THEN amount END, source_rank) AS discount_amount,
        max(source_rank) AS source_rank
    FROM transactions
    WHERE code IN (4, 5, 6)
    GROUP BY store_id, item_id, trans_date
)
-- transactions_files has one row per input file (source_rank, source_file, source_time).
SELECT
    CAST($province AS VARCHAR) AS province,
    newest.store_id,
    newest.item_id,
    newest.trans_date,
    CAST(COALESCE(newest.sale_amount, 0) AS DECIMAL(18, 2)) AS sale_amount,
    CAST(COALESCE(newest.tax_amount, 0) AS DECIMAL(18, 2)) AS tax_amount,
    CAST(COALESCE(newest.discount_amount, 0) AS DECIMAL(18, 2)) AS discount_amount,
    files.source_file,
    files.source_time
FROM newest
JOIN transactions_files AS files ON files.source_rank = newest.source_rank
ORDER BY newest.store_id, newest.item_id, newest.trans_date
