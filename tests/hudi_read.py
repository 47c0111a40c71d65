"""Reads a Hudi table with hudi-rs (the `hudi` PyPI package), the independent reader tally's
tests check its tables against. Prints JSON: the snapshot rows (values as text), the completed
commits and the table options.

A table on the local file system is read a second time, each base file of the snapshot by
pyarrow's own Parquet reader (C++; hudi-rs and tally both use arrow-rs's): the rows must be the
same, or this exits non-zero. tally writes some columns' pages itself
(engine/sinks/hudi/runs_chunk.rs), so two Parquet implementations read every table.

    python3 tests/hudi_read.py TABLE_URI
"""
import json
import os
import sys

import hudi
import pyarrow as pa
import pyarrow.parquet as pq


def as_text(row) -> dict:
    """A row with its values as text (None stays None), as this script prints them."""
    return {k: (None if v is None else str(v)) for k, v in row.items()}


def local_path(uri: str):
    """The folder of a local table's URI, or None for an object store's."""
    if uri.startswith("file://"):
        return uri[len("file://") :]
    return None if "://" in uri else uri


def check_with_pyarrow(uri: str, table, rows) -> None:
    base = local_path(uri)
    if base is None:
        return
    files = [os.path.join(base, s.base_file_relative_path()) for s in table.get_file_slices()]
    read = [r for f in files for r in pq.read_table(f).to_pylist()]

    def keyed(rows):
        return sorted(
            json.dumps(as_text(r), sort_keys=True)
            for r in rows
        )

    if keyed(read) != keyed(rows):
        sys.exit(f"pyarrow reads other rows than hudi-rs from the base files of {uri}: {files}")


def main(uri: str) -> None:
    builder = hudi.HudiTableBuilder.from_base_uri(uri)
    if uri.startswith("s3://"):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        options = {
            "aws_access_key_id": os.environ["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": os.environ["AWS_SECRET_ACCESS_KEY"],
            "aws_region": os.environ.get("AWS_REGION", "us-east-1"),
        }
        if endpoint:
            options["aws_endpoint_url"] = endpoint
            options["aws_allow_http"] = str(endpoint.startswith("http://")).lower()
        builder = builder.with_storage_options(options)
    table = builder.build()
    batches = table.read()
    rows = pa.Table.from_batches(batches).to_pylist() if batches else []
    check_with_pyarrow(uri, table, rows)
    commits = [c.timestamp for c in table.get_timeline().get_completed_commits()]
    print(
        json.dumps(
            {
                "rows": [as_text(r) for r in rows],
                "commits": commits,
                "options": table.hudi_options(),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
