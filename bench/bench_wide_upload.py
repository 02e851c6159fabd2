"""Issue 16's wide file: a 1-row CSV of --columns columns (default 20,000) uploaded through the
API (Flask's test client, in process, SQLite in a temp dir), against the same upload at half the
width in the same run: the ratio of the two times is about 2 for an upload that is linear in the
columns (4 for a quadratic one). Then the size of GET /v1/datasets (list entries carry no column
profiles) against GET /v1/datasets/{id}.

`python -m bench wide_upload [--columns N] [--repeat R]` (the best of R uploads per width)."""
from __future__ import annotations

import argparse
import io
import tempfile
import time

from bps.config import Settings
from bps.db import make_engine, session_scope
from bps.models import Base
from bps.tenants import create_api_key


def wide_csv(columns: int) -> bytes:
    return (",".join(f"feature_{i}" for i in range(columns)) + "\n"
            + ",".join(f"{i * 0.5}" for i in range(columns)) + "\n").encode()


def api_client(tmp: str):  # noqa: ANN201
    from service.app import create_app

    url = f"sqlite:///{tmp}/bps.db"
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    engine.dispose()
    with session_scope(url) as session:
        key = create_api_key(session=session, tenant_name="bench")
    settings = Settings(database_url=url, broker_url=f"sqla+sqlite:///{tmp}/broker.db", var_dir=tmp,
                        rate_limit_per_minute=0)
    return create_app(settings).test_client(), {"Authorization": f"Bearer {key}"}


def upload_seconds(client, auth: dict[str, str], raw: bytes, repeat: int) -> tuple[float, str]:  # noqa: ANN001
    best, dataset_id = float("inf"), ""
    for _ in range(repeat):
        start = time.perf_counter()
        response = client.post("/v1/datasets", headers=auth, content_type="multipart/form-data",
                               data={"file": (io.BytesIO(raw), "wide.csv")})
        best = min(best, time.perf_counter() - start)
        assert response.status_code == 201, response.get_data(as_text=True)[:300]
        dataset_id = response.get_json()["id"]
    return best, dataset_id


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench wide_upload")
    parser.add_argument("--columns", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args, _ = parser.parse_known_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        client, auth = api_client(tmp)
        upload_seconds(client, auth, wide_csv(10), 1)  # imports (pandas, pyarrow) outside the timings
        half, _ = upload_seconds(client, auth, wide_csv(args.columns // 2), args.repeat)
        full, dataset_id = upload_seconds(client, auth, wide_csv(args.columns), args.repeat)
        listed = len(client.get("/v1/datasets", headers=auth).get_data())
        detail = len(client.get(f"/v1/datasets/{dataset_id}", headers=auth).get_data())
    print(f"upload 1x{args.columns // 2}: {half:.3f} s (anchor); 1x{args.columns}: {full:.3f} s; "
          f"ratio {full / half:.2f} (linear ~2, quadratic ~4)")
    print(f"GET /v1/datasets: {listed} bytes for {1 + 2 * args.repeat} datasets; "
          f"GET /v1/datasets/{{id}} of the widest: {detail} bytes")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
