"""Published contracts of the carbon ETS platform: event payload models and the topic catalogue.

External integrators `pip install` this package to produce or consume the platform's events.
"""

from carbon_contracts.envelope import (
    CE_SPECVERSION,
    CONTENT_TYPE,
    dataschema_uri,
    event_type_name,
)
from carbon_contracts.events import EVENT_MODELS, CyclePayload, EventPayload, Payload, model_for
from carbon_contracts.subscriber import (
    CloudEvent,
    InvalidEvent,
    attributes_of,
    from_record,
    schema_for,
    validate,
)

__all__ = [
    "CE_SPECVERSION",
    "CONTENT_TYPE",
    "EVENT_MODELS",
    "CloudEvent",
    "CyclePayload",
    "EventPayload",
    "InvalidEvent",
    "Payload",
    "attributes_of",
    "dataschema_uri",
    "event_type_name",
    "from_record",
    "model_for",
    "schema_for",
    "validate",
]
