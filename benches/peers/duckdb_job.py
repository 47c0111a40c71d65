"""The province job in DuckDB: the same aggregation as jobs/province_sales.sql.

usage: duckdb_job.py INPUT_DIR PROVINCE FILE_TIMES_JSON OUTPUT_CSV

FILE_TIMES_JSON maps each input file's path to its source time (epoch microseconds), which the
harness reads from the file system: DuckDB's CSV reader knows file names, not file times.
"""
import json
import sys

import duckdb

input_dir, province, times_path, output = sys.argv[1:5]
con = duckdb.connect()
times = json.load(open(times_path))
con.execute("CREATE TABLE file_times (source_file VARCHAR, source_time BIGINT)")
con.executemany("INSERT INTO file_times VALUES (?, ?)", list(times.items()))
con.execute(
    """
COPY (
    WITH transactions AS (
        SELECT t.*, f.source_time
        FROM read_csv(?, header = false, delim = ',', quote = '"', filename = 'source_file',
                      columns = {'store_id': 'VARCHAR', 'amount': 'DECIMAL(18,2)', 'code': 'BIGINT',
                                 'item_id': 'VARCHAR', 'trans_date': 'DATE', 'register': 'VARCHAR',
                                 'receipt': 'VARCHAR', 'tender': 'VARCHAR'}) t
        JOIN file_times f USING (source_file)
    ),
    per_file AS (
        SELECT store_id, item_id, trans_date, source_file, source_time,
               SUM(CASE WHEN code = 4 THEN amount ELSE 0 END)::DECIMAL(18,2) AS sale_amount,
               SUM(CASE WHEN code = 5 THEN amount ELSE 0 END)::DECIMAL(18,2) AS tax_amount,
               SUM(CASE WHEN code = 6 THEN amount ELSE 0 END)::DECIMAL(18,2) AS discount_amount
        FROM transactions
        WHERE code IN (4, 5, 6)
        GROUP BY ALL
    )
    SELECT ?::VARCHAR AS province, store_id, item_id, trans_date,
           sale_amount, tax_amount, discount_amount, source_file,
           make_timestamp(source_time) AS source_time
    FROM per_file
    QUALIFY ROW_NUMBER() OVER (PARTITION BY store_id, item_id, trans_date
                               ORDER BY source_time DESC, source_file DESC) = 1
    ORDER BY store_id, item_id, trans_date
) TO '"""
    + output.replace("'", "''")
    + "' (HEADER, DELIMITER ',')",
    [f"{input_dir}/{province}-*.csv", province],
)
