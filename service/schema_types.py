"""The base classes and field types that the request and response bodies (service/schemas.py)
share: strict requests, responses read from rows, UTC timestamps, and the network spec as it
is published (NetworkSpec) but checked (worker.engine.validate_spec)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, PlainValidator, WithJsonSchema

from worker.engine.spec import NetworkSpec

MAX_FEATURES = 100_000


def _as_utc(value: datetime) -> datetime:
    """Stored timestamps are UTC; some backends (SQLite) return them without a zone."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


UTCDatetime = Annotated[datetime, AfterValidator(_as_utc)]
MAX_INSTANCES = 1_000_000


class StrictModel(BaseModel):
    """Unknown fields are a 422, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class ResponseModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


def _json_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("the spec must be a JSON object")
    return value


# Published as NetworkSpec (its discriminated unions of layers, optimizers and schedules); kept
# raw here because `validate_spec` checks it against the dataset and names every problem at once.
SpecObject = Annotated[dict[str, Any], PlainValidator(_json_object, json_schema_input_type=NetworkSpec)]
# In answers: the normalised spec, a NetworkSpec with every default filled in (it can be sent again
# as it is). NetworkSpec is in the document's components through JobCreate.
NormalisedSpec = Annotated[dict[str, Any], WithJsonSchema({"allOf": [{"$ref": "#/components/schemas/NetworkSpec"}],
                                                           "description": "normalised: every default filled in"},
                                                          mode="serialization")]
