"""The typed views the notifier's API answers with."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict


class NotificationView(BaseModel):
    model_config = ConfigDict(frozen=True)

    recipient_type: Literal["entity", "district"]
    recipient_id: str
    credit_code: str
    event_type: str
    event_id: str
    subject: str
    message: str
    created_at: datetime
