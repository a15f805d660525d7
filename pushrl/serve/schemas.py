"""Request and response bodies of the policy server (the OpenAPI spec is generated from them)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import re
import time
from typing import Any, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

from pushrl.data.timezones import zone_names

DAY = 86400
#: Days before and after the wall clock in which times are accepted (``--time-window``):
#: the feature state and its time-zone offsets are sized by the times clients send.
TIME_WINDOW_DAYS = (3653, 731)
_window = list(TIME_WINDOW_DAYS)
_MIN_SEC, _MAX_SEC = 946_684_800, 4_102_444_799  # 2000-01-01T00:00:00Z .. 2099-12-31T23:59:59Z
_ISO = (r"^20[0-9]{2}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?"
        r"(Z|[+-][0-9]{2}:[0-9]{2})$")
_ISO_RE = re.compile(_ISO)


def _json_int(v: Any) -> Any:
    """JSON Schema integers: ints and integral floats (``3.0``); never bools or strings."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def set_time_window(past_days: int, future_days: int) -> None:
    """Accept times from ``past_days`` before to ``future_days`` after the wall clock."""
    if past_days < 0 or future_days < 0:
        raise ValueError(f"the time window must be >= 0 days each way, got past={past_days}, "
                         f"future={future_days}")
    _window[:] = [past_days, future_days]


def _in_window(t: dt.datetime) -> dt.datetime:
    sec, now = t.timestamp(), time.time()
    past, future = _window
    if not now - past * DAY <= sec <= now + future * DAY:
        days = (sec - now) / DAY
        when = f"{-days:,.0f} days before" if days < 0 else f"{days:,.0f} days after"
        raise ValueError(f"time {t.isoformat()} is {when} now; the server accepts times from "
                         f"{past} days before to {future} days after now (pushrl serve "
                         "--time-window PAST,FUTURE)")
    return t


def _check_ts(v: Any) -> int | dt.datetime:
    """Unix seconds (int) or an ISO 8601 string with a UTC offset, years 2000-2099, within
    the server's time window (:func:`set_time_window`): unix seconds as the int, an ISO time
    as its (aware) datetime."""
    if type(v) is int and _MIN_SEC <= v <= _MAX_SEC:  # unix seconds: the hot case, checked
        # on the int (== float(v), exact here) instead of a datetime conversion
        now = time.time()
        if now - _window[0] * DAY <= v <= now + _window[1] * DAY:
            return v
    v = _json_int(v)
    if isinstance(v, int) and not isinstance(v, bool):
        if not _MIN_SEC <= v <= _MAX_SEC:
            raise ValueError(f"unix time {v} is outside 2000-01-01 .. 2099-12-31")
        _in_window(dt.datetime.fromtimestamp(v, dt.UTC))
        return int(v)
    if isinstance(v, str) and _ISO_RE.match(v):
        try:
            t = dt.datetime.fromisoformat(v[:-1] + "+00:00" if v.endswith("Z") else v)
        except ValueError as exc:
            raise ValueError(f"invalid time {v!r}: {exc}") from None
        return _in_window(t)
    raise ValueError("expected unix seconds (integer) or an ISO 8601 time with a timezone "
                     "offset in 2000..2099, e.g. 2026-03-02T09:00:00Z")


def _parse_ts(v: Any) -> dt.datetime:
    """:func:`_check_ts`'s time as an aware datetime (:data:`Timestamp`)."""
    t = _check_ts(v)
    return t if isinstance(t, dt.datetime) else dt.datetime.fromtimestamp(t, dt.UTC)


def _parse_sec(v: Any) -> int:
    """:func:`_check_ts`'s time as whole unix seconds (:data:`UnixSeconds`): what
    ``int(t.timestamp())`` makes of the :data:`Timestamp` of the same value, without the
    datetime (the decide request's hot path, issue 20)."""
    t = _check_ts(v)
    return int(t.timestamp()) if isinstance(t, dt.datetime) else t


_TS_SCHEMA = WithJsonSchema({
    "anyOf": [{"type": "string", "format": "date-time", "pattern": _ISO},
              {"type": "integer", "minimum": _MIN_SEC, "maximum": _MAX_SEC}],
    "description": "ISO 8601 with offset (e.g. 2026-03-02T09:00:00Z) or unix seconds"})
#: A timezone-aware timestamp: ISO 8601 with offset, or unix seconds; years 2000..2099.
Timestamp = Annotated[AwareDatetime, BeforeValidator(_parse_ts), _TS_SCHEMA]
#: The same input as :data:`Timestamp` (same checks, same errors, same JSON schema), as
#: whole unix seconds (fractions of an ISO time dropped, as ``int(t.timestamp())``).
UnixSeconds = Annotated[int, BeforeValidator(_parse_sec), _TS_SCHEMA]
TimeZone = Annotated[str, WithJsonSchema({
    "type": "string", "enum": sorted(zone_names()),
    "description": "IANA time zone, e.g. Europe/Berlin"})]
Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$",
                          description="Opaque printable ASCII id (no spaces), never personal "
                          "data.")]
Scalar = float | int | bool | str
Attributes = Annotated[dict[Annotated[str, Field(min_length=1, max_length=64)],
                            Annotated[Scalar, Field()] | None],
                       Field(max_length=64)]
EventName = Literal["session", "view", "cart", "purchase"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, str_max_length=256,
                              strict=True)


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer."""

    error: str = Field(description="Machine-readable error code, e.g. `unknown_user`.")
    detail: str = Field(description="What was wrong and how to fix it.")


class UserIn(_Body):
    """A user's time zone and features."""

    timezone: TimeZone = Field("UTC", description="IANA time zone, e.g. Europe/Berlin.")
    features: Attributes = Field(default_factory=dict,
                                 description="User features (opaque values, no personal data).")
    ts: Timestamp | None = Field(None, description="When the user's state starts (new users "
                                 "only); decisions may not be earlier. Default: now.")
    subscribed: bool | None = Field(None, description=(
        "false: the user opted out; every later decision is a no-send with reason "
        "`guardrail:unsubscribed` (durable, as feedback `unsubscribed=true`). true: "
        "(re-)subscribe. Omitted: unchanged (new users start subscribed)."))
    channels: list[str] | None = Field(None, max_length=16, description=(
        "With `--channels`: the channels the user opted into (e.g. [\"push\", \"email\"]; "
        "[] = none: every send is `channel:none`). Omitted: unchanged (new users: every "
        "channel). An unsubscribe on a channel's push removes that channel."))


class UserOut(BaseModel):
    """Answer of ``PUT /v1/users/{user_id}``."""

    user_id: str
    created: bool
    subscribed: bool = Field(description="The user's subscription status after the request.")
    channels: list[str] | None = Field(None, description="With `--channels`: the channels "
                                       "the user is opted into now; null without.")


class ItemIn(_Body):
    """An item of the catalog."""

    category: str | None = Field(None, max_length=128)
    features: Attributes = Field(default_factory=dict, description="Numeric item features.")


class ItemOut(BaseModel):
    """Answer of ``PUT /v1/items/{item_id}``."""

    item_id: str
    created: bool


class Event(_Body):
    """An organic activity event."""

    user_id: Id
    event: EventName
    ts: Timestamp | None = Field(None, description="Event time (default: now).")
    item_id: Id | None = None
    revenue: float | None = Field(None, ge=0, le=1e9)


class EventBatch(_Body):
    """Several events at once (applied in order, all or nothing)."""

    events: list[Event] = Field(min_length=1, max_length=10000)


class EventsOut(BaseModel):
    """Answer of ``POST /v1/events``."""

    accepted: int


class DecideIn(_Body):
    """Ask whether to push to a user now, and what."""

    user_id: Id
    ts: UnixSeconds | None = Field(None, description="Decision time (default: now).")
    candidates: list[Id] | None = Field(None, min_length=1, max_length=1000,
                                        json_schema_extra={"uniqueItems": True},
                                        description="Eligible item ids, each once (default: all "
                                        "items).")
    context: Attributes | None = Field(None, description="Request context, logged as ctx_*.")
    horizon_hours: Annotated[int, Field(ge=0, le=168), BeforeValidator(_json_int)] | None = Field(
        None, description=(
        "Also return `send_at`, the first slot within this many hours in which the timing "
        "policy would send, assuming no new events."))


class DecideOut(BaseModel):
    """A decision; `pscore` is the probability of the logged action (send+item, or wait),
    `p_send` the timing policy's probability of sending (whatever was decided)."""

    decision_id: str
    send: bool
    item_id: str | None
    pscore: float = Field(gt=0, le=1)
    p_send: float = Field(ge=0, le=1, description="Probability that the timing policy sends "
                          "(0 where a guardrail blocks); logged as `pscore_send`.")
    policy: str = Field(description="Timing policy `name@version`.")
    item_policy: str | None = Field(None, description="Item policy `name@version` when sent.")
    reason: str = Field(description="`policy`, or `guardrail:<name>` when a guardrail decided "
                        "(unsubscribed, quiet_hours, daily_cap, weekly_cap, kill_switch).")
    ts: dt.datetime
    send_at: dt.datetime | None = Field(None, description="With `horizon_hours`: first slot "
                                        "in which the policy would send (null: none).")
    holdout: bool | None = Field(None, description="With a live holdout (`--holdout`): true "
                                 "when the user is held out of the campaign (never sent), "
                                 "false when treated; null without a holdout.")
    p_holdout: float | None = Field(None, ge=0, le=1, description="Probability of being held "
                                    "out (the holdout's share); null without a holdout.")
    template_id: str | None = Field(None, description="With `--templates`, on a sent "
                                    "push: the approved message template chosen.")
    template_text: str | None = Field(None, description="Its copy, rendered for the item "
                                      "and the user.")
    pscore_template: float | None = Field(None, gt=0, le=1, description="Probability of "
                                          "`template_id` given the item (logged).")
    template_policy: str | None = Field(None, description="Template policy `name@version`.")
    channel: str | None = Field(None, description="With `--channels`, on a send the timing "
                                "policy decided: the channel it goes out on (push, email, "
                                "in_app ...); null with `send=false`, reason `channel:none`, "
                                "when the channel slot chose none.")
    pscore_channel: float | None = Field(None, gt=0, le=1, description="Probability of "
                                         "`channel` (or of none) given the item (logged).")
    pscore_channel_item: float | None = Field(None, gt=0, le=1, description="Probability "
                                              "of the chosen (channel, item) pair: the item "
                                              "policy's times `pscore_channel`.")
    channel_policy: str | None = Field(None, description="Channel policy `name@version`.")
    trigger_id: str | None = Field(None, description="Set when the push is a due "
                                   "behaviour trigger (reason `trigger:<kind>`) that "
                                   "outranked the scheduled push; `pscore` is then its delay "
                                   "arm's probability.")


class DecideBatchIn(_Body):
    """Several decisions at once; a user's requests are decided in order."""

    requests: list[DecideIn] = Field(min_length=1, max_length=1000)


class DecideBatchOut(BaseModel):
    """Answer of ``POST /v1/decide/batch``, aligned with the requests."""

    decisions: list[DecideOut]


class ItemUpdate(_Body):
    """A change of an item's price or stock (feeds the price-drop and back-in-stock
    triggers; logged as pushlog ``item_updates``)."""

    item_id: Id
    ts: Timestamp | None = Field(None, description="When it changed (default: now).")
    price: float | None = Field(None, ge=0, le=1e9, description="New price (null: unchanged).")
    in_stock: bool | None = Field(None, description="New stock status (null: unchanged).")

    @model_validator(mode="after")
    def _something(self) -> Self:
        if self.price is None and self.in_stock is None:
            raise ValueError("an item update needs `price` or `in_stock` (or both)")
        return self


class ItemUpdateBatch(_Body):
    """Several item updates at once (applied in order, all or nothing)."""

    updates: list[ItemUpdate] = Field(min_length=1, max_length=10000)


class ItemUpdatesOut(BaseModel):
    """Answer of ``POST /v1/items/updates``."""

    accepted: int
    triggers_created: int = Field(description="Triggers these updates created (price drop, "
                                  "back in stock), each with its delay arm.")


class TriggersDueIn(_Body):
    """What a sender polls: the due behaviour-triggered sends of a batch of users."""

    users: list[Id] = Field(min_length=1, max_length=10000,
                            json_schema_extra={"uniqueItems": True},
                            description="User ids, each once.")
    ts: Timestamp | None = Field(None, description="The time of the poll (default: now).")
    request_id: Id | None = Field(None, description=(
        "Idempotency key: a retry with the same id returns the first answer again and marks "
        "nothing twice. Without it, a second poll returns only sends not returned before."))
    format: Literal["rows", "columns"] = Field("rows", description=(
        "`rows`: `sends` is a list of objects (one per send). `columns`: `sends` is one "
        "object of equal-length lists, one per field (`trigger_id`, `decision_id`, `user_id`, "
        "`kind`, `item_id`, `event_ts`, `delay_h`, `pscore`, `policy`, `priority`): the "
        "same sends in the same order, several times cheaper to encode and parse for "
        "thousands of sends. A retry's `request_id` must repeat the format."))


class DueSend(BaseModel):
    """One send a sender should deliver now; already logged as a push (``decision_id``)."""

    trigger_id: str
    decision_id: str = Field(description="The push row it became; report outcomes with "
                             "POST /v1/feedback.")
    user_id: str
    kind: str
    item_id: str | None
    event_ts: dt.datetime = Field(description="When the behaviour that created it happened.")
    delay_h: int = Field(description="The delay arm chosen at creation (hours after the event).")
    pscore: float = Field(gt=0, le=1, description="Probability of the chosen delay arm.")
    policy: str = Field(description="Delay policy `name@version` that chose the arm.")
    priority: int


class TriggersDueOut(BaseModel):
    """Answer of ``POST /v1/triggers/due``."""

    sends: list[DueSend]
    requeued: int = Field(description="Due triggers a guardrail (quiet hours, caps, "
                          "unsubscribed) or a higher-priority send held back: due again next "
                          "hour until they expire.")
    replayed: bool = Field(False, description="True when this answers a retried request_id.")


class DueSendColumns(BaseModel):
    """The sends of a pull with ``format: "columns"``: equal-length lists, entry ``i`` of
    each is send ``i`` (the fields of :class:`DueSend`)."""

    trigger_id: list[str]
    decision_id: list[str]
    user_id: list[str]
    kind: list[str]
    item_id: list[str | None]
    event_ts: list[dt.datetime]
    delay_h: list[int]
    pscore: list[float]
    policy: list[str]
    priority: list[int]


class TriggersDueColumnsOut(BaseModel):
    """Answer of ``POST /v1/triggers/due`` with ``format: "columns"``."""

    sends: DueSendColumns
    requeued: int
    replayed: bool = False


class TriggerOut(BaseModel):
    """One pending or finished trigger of a user."""

    trigger_id: str
    kind: str
    item_id: str | None
    event_ts: dt.datetime
    expires_ts: dt.datetime
    priority: int
    status: str
    delay_h: int | None = Field(description="Chosen arm (null: drop).")
    pscore: float
    due_ts: dt.datetime | None


class UserTriggersOut(BaseModel):
    """Answer of ``GET /v1/users/{user_id}/triggers``."""

    user_id: str
    triggers: list[TriggerOut]


class FeedbackIn(_Body):
    """Outcomes of a decision; repeated reports merge (idempotent). ``clicked=true`` implies
    ``opened=true``; the revenue of the report with the latest ``ts`` counts."""

    decision_id: Id
    opened: bool | None = None
    clicked: bool | None = None
    converted: bool | None = None
    revenue: float | None = Field(None, ge=0, le=1e9)
    unsubscribed: bool | None = Field(None, description=(
        "true: the user unsubscribed; every later decision for them is a no-send (reason "
        "`guardrail:unsubscribed`), also when reported late, until `PUT /v1/users` with "
        "`subscribed=true`."))
    ts: Timestamp | None = Field(None, description="When the outcome happened (default: now).")

    @model_validator(mode="after")
    def _click_implies_open(self) -> Self:
        # a click on a push is an open of it: `clicked=true` alone records `opened=true` too
        if self.clicked and self.opened is False:
            raise ValueError("`clicked` is true but `opened` is false: a click implies an open; "
                             "send opened=true or leave `opened` out")
        if self.clicked:
            self.opened = True
        return self


class Outcomes(BaseModel):
    """Outcomes recorded for a decision within the attribution window."""

    opened: bool | None = None
    clicked: bool | None = None
    converted: bool | None = None
    revenue: float | None = None
    unsubscribed: bool | None = None


class FeedbackOut(BaseModel):
    """Answer of ``POST /v1/feedback``."""

    decision_id: str
    late: bool = Field(description="True when reported after the attribution window: "
                       "recorded but not counted as an outcome.")
    outcomes: Outcomes


class FeedbackBatchIn(_Body):
    """Several feedback reports at once: each validated as ``POST /v1/feedback``, applied in
    order (a decision listed twice merges), all or nothing, in one commit; an error names
    its row (``feedback[i]``)."""

    feedback: list[FeedbackIn] = Field(min_length=1, max_length=10000)


class FeedbackBatchOut(BaseModel):
    """Answer of ``POST /v1/feedback/batch``, aligned with the reports."""

    results: list[FeedbackOut]


class SlotOut(BaseModel):
    """Active and shadow policy of one kind."""

    active: str
    shadow: str | None
    history: list[str]
    fallback: str | None = Field(None, description="Why the pointer's artifact is not the "
                                 "one serving (it was broken at start-up), if so.")


class PoliciesOut(BaseModel):
    """Answer of ``GET /v1/policies``."""

    timing: SlotOut
    item: SlotOut
    delay: SlotOut | None = None
    kill_switch: bool
    generation: int
    available: list[dict[str, object]]


class PromoteIn(_Body):
    """Promote (or shadow) a registry artifact."""

    version: str | None = Field(None, max_length=32, pattern=r"^v[0-9]+$",
                                description="Version (default: newest).")
    shadow: bool = Field(False, description="Run it in shadow mode instead of promoting.")
    force: bool = Field(False, description="Skip a failing/unavailable OPE gate (needs reason).")
    reason: str | None = Field(None, max_length=500, description="Why (audit log).")


class RollbackIn(_Body):
    """Roll back the slot `name` is active (or shadow) in."""

    reason: str | None = Field(None, max_length=500)


class ChangeOut(BaseModel):
    """Answer of promote / rollback / kill switch."""

    kind: str
    active: str
    shadow: str | None
    generation: int
    gate: dict[str, object] | None = None


class KillSwitchIn(_Body):
    """Turn the global kill switch on (never send) or off."""

    enabled: bool
    reason: str = Field(min_length=1, max_length=500)


class KillSwitchOut(BaseModel):
    """Answer of ``PUT /v1/kill-switch``."""

    enabled: bool


class Health(BaseModel):
    """Liveness / readiness."""

    status: str
    detail: str | None = None
