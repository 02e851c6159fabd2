"""The client's exceptions: an HTTP error with its problem+json, and a job or an asynchronous
prediction that did not succeed."""
from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """Any HTTP error answer. `problem` is the RFC 9457 body (type, title, status, detail, errors)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status, self.problem = status, problem
        super().__init__(str(self))

    @property
    def errors(self) -> list[dict[str, Any]]:
        return list(self.problem.get("errors") or [])

    def __str__(self) -> str:
        title = self.problem.get("title") or f"HTTP {self.status}"
        detail = self.problem.get("detail")
        return f"{title}: {detail}" if detail else title


class Unsuccessful(Exception):
    """A job or asynchronous prediction that ended without succeeding: `resource` is its final
    state, `status` and `error` (the server's reason, else "the <kind> was <status>") from it."""

    def __init__(self, kind: str, resource: dict[str, Any]) -> None:
        self.resource, self.status = resource, resource.get("status")
        self.error = resource.get("error") or f"the {kind} was {self.status}"
        super().__init__(f"{kind} {resource.get('id')} {self.status}: {self.error}")


class JobFailed(Unsuccessful):
    """`wait` on a job that ended failed or cancelled; `job` is the final Job, `error` its reason."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job
        super().__init__("job", job)


class PredictionFailed(Unsuccessful):
    """`wait_prediction` on an asynchronous prediction that ended failed; `prediction` is the final
    Prediction, `error` the server's reason (e.g. the dataset row it could not predict)."""

    def __init__(self, prediction: dict[str, Any]) -> None:
        self.prediction = prediction
        super().__init__("prediction", prediction)
