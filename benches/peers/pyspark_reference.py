"""The reference implementation's Spark step (ProcessVendorTrasactions), in PySpark local mode.

usage: pyspark_reference.py INPUT_DIR PROVINCE OUTPUT_DIR

Its logic, kept as it is so the timing is the reference's: lines are split on commas into string
columns; codes 4, 5 and 6 are filtered and summed separately (strings summed as doubles), then the
tax and discount sums are left-joined onto the sale sums. (It keeps every cumulative version, drops
item-days without a sale and sums money as floating point: the defects tally fixes, so its rows are
not expected to match tally's.) The result is written as CSV, where the reference staged it in S3
for Redshift. All work stays in the JVM (no Python UDFs), as in the Java original.
"""
import sys

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

input_dir, province, output = sys.argv[1:4]
spark = (
    SparkSession.builder.master("local[2]")
    .appName("reference-province-job")
    .config("spark.driver.memory", "4g")
    .config("spark.ui.enabled", "false")
    .getOrCreate()
)
spark.sparkContext.setLogLevel("ERROR")
fields = F.split(F.col("value"), ",")
sales = spark.read.text(f"{input_dir}/{province}-*.csv").select(
    fields[0].alias("vendor_id"),
    fields[1].alias("trans_amount"),
    fields[2].alias("trans_type"),
    fields[3].alias("item_id"),
    fields[4].alias("trans_date"),
)
key = ["vendor_id", "item_id", "trans_date"]


def total(code, name):
    return (
        sales.filter(F.col("trans_type") == code)
        .groupBy(*key)
        .agg(F.sum("trans_amount").alias(name))
    )


aggregated = (
    total("4", "sale_amount")
    .join(total("5", "tax_amount"), key, "left_outer")
    .join(total("6", "discount_amount"), key, "left_outer")
)
aggregated.write.mode("overwrite").csv(output)
spark.stop()
