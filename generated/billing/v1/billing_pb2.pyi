import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from greeter.v1 import greeter_pb2 as _greeter_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ChargeRequest(_message.Message):
    __slots__ = ("greeting", "cents")
    GREETING_FIELD_NUMBER: _ClassVar[int]
    CENTS_FIELD_NUMBER: _ClassVar[int]
    greeting: _greeter_pb2.HelloReply
    cents: int
    def __init__(self, greeting: _Optional[_Union[_greeter_pb2.HelloReply, _Mapping]] = ..., cents: _Optional[int] = ...) -> None: ...

class Invoice(_message.Message):
    __slots__ = ("id", "cents", "issued_at", "payment_term", "lines")
    class Line(_message.Message):
        __slots__ = ("text", "cents")
        TEXT_FIELD_NUMBER: _ClassVar[int]
        CENTS_FIELD_NUMBER: _ClassVar[int]
        text: str
        cents: int
        def __init__(self, text: _Optional[str] = ..., cents: _Optional[int] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    CENTS_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_TERM_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    id: str
    cents: int
    issued_at: _timestamp_pb2.Timestamp
    payment_term: _duration_pb2.Duration
    lines: _containers.RepeatedCompositeFieldContainer[Invoice.Line]
    def __init__(self, id: _Optional[str] = ..., cents: _Optional[int] = ..., issued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., payment_term: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., lines: _Optional[_Iterable[_Union[Invoice.Line, _Mapping]]] = ...) -> None: ...

class ListInvoicesRequest(_message.Message):
    __slots__ = ("since",)
    SINCE_FIELD_NUMBER: _ClassVar[int]
    since: _timestamp_pb2.Timestamp
    def __init__(self, since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
