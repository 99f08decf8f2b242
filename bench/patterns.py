"""The parquet access pattern of examples/bench and tests/python/test_access_patterns.py: a
strided column projection (issue 10: chunks of ~0.5 MB with megabytes skipped between them).

  make --out FILE                         writes the deterministic parquet file
  read --path P --source S [--columns C]  pq.read_table(P, columns=C), checked against S; prints
                                          JSON {seconds, needed_bytes, file_bytes, rows}

The file: 20 float64 columns of 6 row groups x 65536 rows, uncompressed and without dictionaries,
so each column chunk is ~0.5 MB, each column ~3 MB, 63 MB in all. The two columns read (c03,
c10) are 7 chunks apart: the projection reads ~0.5 MB, skips ~3 MB, reads ~0.5 MB, skips ~6.5 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

COLUMNS = 20
ROW_GROUPS = 6
ROWS_PER_GROUP = 65536
SELECTED = ["c03", "c10"]


def write_parquet(path) -> None:
    """Writes the file (the same bytes on every call with the same pyarrow)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(20)
    rows = ROW_GROUPS * ROWS_PER_GROUP
    table = pa.table({f"c{i:02d}": rng.standard_normal(rows) for i in range(COLUMNS)})
    pq.write_table(table, path, row_group_size=ROWS_PER_GROUP, compression="NONE", use_dictionary=False)


def needed_bytes(path, columns) -> int:
    """The bytes a projection of `columns` must read: their column chunks and the footer."""
    import pyarrow.parquet as pq

    md = pq.ParquetFile(path).metadata
    chunks = 0
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        for c in range(rg.num_columns):
            col = rg.column(c)
            if col.path_in_schema in columns:
                chunks += col.total_compressed_size
    return chunks + md.serialized_size + 8  # footer: metadata, its 4-byte length, "PAR1"


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--out", required=True)
    r = sub.add_parser("read")
    r.add_argument("--path", required=True)
    r.add_argument("--source", required=True)
    r.add_argument("--columns", default=",".join(SELECTED))
    a = p.parse_args()
    if a.cmd == "make":
        write_parquet(a.out)
        json.dump({"path": a.out, "file_bytes": os.path.getsize(a.out)}, sys.stdout)
        return
    import pyarrow.parquet as pq

    columns = a.columns.split(",")
    t0 = time.perf_counter()
    got = pq.read_table(a.path, columns=columns)
    dt = time.perf_counter() - t0
    if not got.equals(pq.read_table(a.source, columns=columns)):
        sys.exit("the table read through the mount differs from the source")
    json.dump(
        {
            "seconds": dt,
            "needed_bytes": needed_bytes(a.source, columns),
            "file_bytes": os.path.getsize(a.source),
            "rows": got.num_rows,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
