"""The province job in Polars: the same aggregation as jobs/province_sales.sql.

usage: polars_job.py INPUT_DIR PROVINCE FILE_TIMES_JSON OUTPUT_CSV
"""
import json
import sys

import polars as pl

input_dir, province, times_path, output = sys.argv[1:5]
times = json.load(open(times_path))
file_times = pl.DataFrame(
    {"source_file": list(times.keys()), "source_time": list(times.values())},
    schema={"source_file": pl.String, "source_time": pl.Int64},
).lazy()
schema = {
    "store_id": pl.String,
    "amount": pl.Decimal(18, 2),
    "code": pl.Int64,
    "item_id": pl.String,
    "trans_date": pl.Date,
    "register": pl.String,
    "receipt": pl.String,
    "tender": pl.String,
}
key = ["store_id", "item_id", "trans_date"]
zero = pl.lit(0).cast(pl.Decimal(18, 2))
result = (
    pl.scan_csv(f"{input_dir}/{province}-*.csv", has_header=False, schema=schema,
                include_file_paths="source_file")
    .filter(pl.col("code").is_in([4, 5, 6]))
    .group_by(key + ["source_file"])
    .agg(
        pl.when(pl.col("code") == c).then(pl.col("amount")).otherwise(zero).sum().alias(name)
        for c, name in [(4, "sale_amount"), (5, "tax_amount"), (6, "discount_amount")]
    )
    .join(file_times, on="source_file")
    # The newest file wins per key: by source time, then by name.
    .sort(key + ["source_time", "source_file"], descending=[False, False, False, True, True])
    .unique(subset=key, keep="first", maintain_order=True)
    .select(
        pl.lit(province).alias("province"), *key, "sale_amount", "tax_amount", "discount_amount",
        "source_file", pl.from_epoch("source_time", time_unit="us").alias("source_time"),
    )
)
result.sink_csv(output)
