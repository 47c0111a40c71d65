"""Reads a Hudi table with hudi-rs (the `hudi` PyPI package), the independent reader tally's
tests check its tables against. Prints JSON: the snapshot rows (values as text), the completed
commits and the table options.

    python3 tests/hudi_read.py TABLE_URI
"""
import json
import os
import sys

import hudi
import pyarrow as pa


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
    commits = [c.timestamp for c in table.get_timeline().get_completed_commits()]
    print(
        json.dumps(
            {
                "rows": [{k: (None if v is None else str(v)) for k, v in r.items()} for r in rows],
                "commits": commits,
                "options": table.hudi_options(),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
