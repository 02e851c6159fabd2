"""Backprop Service client: `Client` for the HTTP API, `bpsc` on the command line.

    from bps_client import Client
    c = Client()                          # BPS_URL / BPS_API_KEY, or the `make run` development key
    ds = c.upload("examples/iris.csv")
    job = c.wait(c.submit(ds["id"], spec, target="species")["id"], progress=True)
    p = c.wait_prediction(c.predict_async(job["model_id"], ds["id"])["id"], progress=True)
    c.download_prediction(p["id"], "predictions.csv")
"""
from __future__ import annotations

from typing import Any

from bps_client.client import DEFAULT_URL, Client
from bps_client.errors import ApiError, JobFailed, PredictionFailed

__all__ = ["DEFAULT_URL", "ApiError", "Client", "JobFailed", "PredictionFailed", "torch_module"]


def torch_module(path: Any) -> Any:
    """A torch.nn.Module from a model downloaded as .npz (see bps_client.pytorch); PyTorch is
    imported only by this call."""
    from bps_client.pytorch import torch_module as build  # noqa: PLC0415

    return build(path)
