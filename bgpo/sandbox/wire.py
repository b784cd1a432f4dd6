"""The wire between the judge and the program: JSON lines of tagged plain data, both ways.

Shipped as source into both processes (so: standard library only, no ``from __future__``).

Threat model: the judge decodes what a hostile program sends. So decoding rebuilds only a
whitelist of standard value types (``Fraction``, ``Decimal``, ``deque``, ``Counter``,
``OrderedDict``, ``defaultdict``, dict views, named tuples, ``range``, bytes, big ints, complex,
``array.array``, ``datetime``'s date/time/datetime/timedelta/timezone, numpy arrays and scalars of
numeric/str dtypes) and never calls anything the data names beyond them (a ``defaultdict``'s
factory is a builtin type by name, or a handle or callback that the other side resolves); any
other object of the program stays in the program and crosses as a *handle* whose equality is
identity on the judge's side. A line longer than the channel's cap (set within the judge's memory
limit) is refused before it is parsed, nesting is capped at :data:`MAX_DEPTH`, and a set or dict
whose keys share one hash more than :data:`MAX_SAME_HASH` times (the quadratic-insert attack) is
refused. Decoding happens only in the judge -- a child with CPU and wall limits -- so whatever it
costs is counted against the run, never against the caller.

Messages are lists whose first item says what they are: requests (``names``; ``call``; ``op``,
an operation of the program's objects by name -- ``getattr``, ``len``, ``add``, ``lt``, ... --
with its operands; ``next``, the program advancing an iterator of the test's) and replies (``ok``,
``err``, ``stop``). Either side may ask while it waits for a reply (a program calling a callback
the test passed it), so :class:`Channel` serves requests until its own reply arrives.
"""

import sys

try:  # the C types that collections re-exports; importing collections itself costs ~2 ms per process
    from _collections import OrderedDict, defaultdict, deque
except ImportError:
    from collections import OrderedDict, defaultdict, deque

MAX_DEPTH = 300
MAX_SAME_HASH = 16
REPLIES = ("ok", "err", "stop")
BIG = 1 << 62
_DEFAULT_FACTORIES = {"int": int, "float": float, "str": str, "list": list, "set": set, "dict": dict,
                      "tuple": tuple, "frozenset": frozenset}
_NUMPY_KINDS = "biufcU"
_ARRAY_CODES = "bBhHiIlLqQfd"
_VIEWS = {type({}.keys()): "dk", type({}.values()): "dv", type({}.items()): "di", type(OrderedDict().keys()): "dk",
          type(OrderedDict().values()): "dv", type(OrderedDict().items()): "di"}


def _codec():
    """JSON ``dumps``/``loads`` for one compact line, from the C codec that :mod:`json` itself uses.

    Importing :mod:`json` costs each sandbox process ~5 ms of CPU (``re``, ``enum``, ``functools``
    with it); ``_json``'s scanner and encoder are the very functions ``json.loads``/``json.dumps``
    call, so a line parses exactly as before -- except that a line must hold one value and nothing
    else (no white space around it: both sides write compact lines).
    """
    try:
        import _json

        class Context:
            strict, object_hook, object_pairs_hook = True, None, None
            parse_float, parse_int, parse_constant = float, int, float  # NaN, Infinity, -Infinity

        scan = _json.make_scanner(Context())

        def default(value):
            raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

        chunks = _json.make_encoder(None, default, _json.encode_basestring_ascii, None, ":", ",", False, False, True)

        def dumps(value):
            return "".join(chunks(value, 0))  # no circular check: encode() made it, acyclic and depth-capped

        def loads(text):
            try:
                value, end = scan(text, 0)
            except StopIteration:
                raise ValueError("not JSON") from None
            if end != len(text):
                raise ValueError("extra data after the JSON value")
            return value

        if loads(dumps([1, "é", {"a": [None, 2.5]}])) != [1, "é", {"a": [None, 2.5]}]:
            raise TypeError("a different _json")
        return dumps, loads
    except (ImportError, AttributeError, TypeError, ValueError):  # another Python: the json module
        import json

        return (lambda value: json.dumps(value, separators=(",", ":"))), json.loads


dumps, loads = _codec()


class ChannelClosed(Exception):
    """The other side exited, crashed or sent a line over the cap."""


def encode(value, other, depth=0):
    """``value`` as JSON-ready tagged data; objects outside the whitelist go through ``other``."""
    if depth > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    kind = type(value)
    if value is None or kind in (bool, str):
        return value
    if kind is int:
        return value if -BIG < value < BIG else {"i": hex(value)}  # no 4300-digit str limit on hex
    if kind is float:
        return value if value == value and value not in (float("inf"), float("-inf")) else {"x": repr(value)}
    if kind is list:
        return [encode(v, other, depth + 1) for v in value]
    deeper = depth + 1
    if kind is tuple:
        return {"t": [encode(v, other, deeper) for v in value]}
    if kind in (set, frozenset):
        return {"s" if kind is set else "fs": [encode(v, other, deeper) for v in value]}
    counter = getattr(sys.modules.get("collections"), "Counter", None)  # no Counter without collections
    if kind is dict or kind is OrderedDict or kind is counter:
        tag = "d" if kind is dict else "od" if kind is OrderedDict else "ctr"
        return {tag: [[encode(k, other, deeper), encode(v, other, deeper)] for k, v in value.items()]}
    if kind is defaultdict:
        factory = value.default_factory
        name = getattr(factory, "__name__", None)
        factory = name if _DEFAULT_FACTORIES.get(name) is factory else None if factory is None else other(factory)
        return {"dd": [factory, [[encode(k, other, deeper), encode(v, other, deeper)] for k, v in value.items()]]}
    if kind is deque:
        return {"dq": [[encode(v, other, deeper) for v in value], value.maxlen]}
    if kind is complex:
        return {"c": [repr(value.real), repr(value.imag)]}
    if kind in (bytes, bytearray):
        return {"b" if kind is bytes else "ba": value.hex()}
    # imported only where a value may be one (a program that never imported fractions returns no Fraction)
    if kind is getattr(sys.modules.get("fractions"), "Fraction", None):
        return {"q": [hex(value.numerator), hex(value.denominator)]}
    if kind is getattr(sys.modules.get("decimal"), "Decimal", None):
        return {"dec": str(value)}
    if kind is range:
        return {"r": [encode(value.start, other), encode(value.stop, other), encode(value.step, other)]}
    if kind in _VIEWS:
        tag = _VIEWS[kind]
        return {tag: encode(list(value), other, deeper) if tag != "di" else
                [[encode(k, other, deeper), encode(v, other, deeper)] for k, v in value]}
    if kind is getattr(sys.modules.get("array"), "array", None) and value.typecode in _ARRAY_CODES:
        return {"arr": [value.typecode, encode(value.tolist(), other, deeper)]}
    times = _times(kind, value)
    if times is not None:
        return times
    if isinstance(value, tuple) and kind.__bases__ == (tuple,) and type(getattr(kind, "_fields", None)) is tuple:
        return {"nt": [str(kind.__name__), [str(f) for f in kind._fields], [encode(v, other, deeper) for v in value]]}
    if kind.__module__ == "numpy":
        dtype = getattr(value, "dtype", None)
        if dtype is not None and dtype.kind in _NUMPY_KINDS:
            if kind.__name__ == "ndarray":
                return {"nd": [dtype.str, list(value.shape), encode(value.ravel().tolist(), other, deeper)]}
            return {"np": [dtype.str, encode(value.item(), other, deeper)]}
    # a subclass of a builtin (IntEnum, a str with a forged __eq__) leaves as the builtin value it holds
    for base in (bool, int, float, str, bytes, list, tuple, dict, set, frozenset):
        if isinstance(value, base):
            plain = base(dict.items(value)) if base is dict else base(value)
            if type(plain) is base:
                return encode(plain, other, deeper)
    return other(value)


def _times(kind, value):
    """``datetime``'s values as their constructors' arguments (fixed-offset time zones only), else None."""
    module = sys.modules.get("datetime")
    if module is None or kind not in (module.date, module.time, module.datetime, module.timedelta, module.timezone):
        return None
    if kind is module.timedelta:
        return {"td": [value.days, value.seconds, value.microseconds]}
    if kind is module.timezone:
        return {"tz": [_times(module.timedelta, value.utcoffset(None)), value.tzname(None)]}
    if kind is module.date:
        return {"date": [value.year, value.month, value.day]}
    if value.tzinfo is not None and type(value.tzinfo) is not module.timezone:
        return None  # a zoneinfo or the program's own tzinfo: no value to rebuild
    zone = None if value.tzinfo is None else _times(module.timezone, value.tzinfo)
    clock = [value.hour, value.minute, value.second, value.microsecond, zone, value.fold]
    return {"time": clock} if kind is module.time else {"dtm": [value.year, value.month, value.day, *clock]}


def _rebuild_time(tag, body):
    """Inverse of :func:`_times`: only ints, a name and a fixed offset reach the constructors."""
    import datetime

    if tag == "td":
        return datetime.timedelta(*_ints(body, 3))
    if tag == "tz":
        offset, name = _list(body, 2)
        offset = _rebuild_time("td", _list(offset.get("td") if type(offset) is dict else None))
        return datetime.timezone(offset, _str(name))
    if tag == "date":
        return datetime.date(*_ints(body, 3))
    fields = _list(body, 6 if tag == "time" else 9)
    *numbers, zone, fold = fields
    zone = None if zone is None else _rebuild_time("tz", zone.get("tz") if type(zone) is dict else _bad())
    kind = datetime.time if tag == "time" else datetime.datetime
    return kind(*_ints(numbers, len(numbers)), tzinfo=zone, fold=_ints([fold], 1)[0])


def decode(data, other, depth=0):
    """Inverse of :func:`encode`; handle and callback tags go to ``other(tag, body)``."""
    if depth > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    kind = type(data)
    if data is None or kind in (bool, int, float, str):
        return data
    deeper = depth + 1
    if kind is list:
        return [decode(v, other, deeper) for v in data]
    if kind is not dict or len(data) != 1:
        raise ValueError("not tagged data")
    ((tag, body),) = data.items()
    if tag in ("t", "s", "fs"):
        items = [decode(v, other, deeper) for v in _list(body)]
        if tag != "t":
            _check_hashes(items)
        return {"t": tuple, "s": set, "fs": frozenset}[tag](items)
    if tag in ("d", "od", "ctr"):
        pairs = _pairs(body, other, deeper)
        built = {"d": dict, "od": OrderedDict, "ctr": dict}[tag](pairs)
        if tag == "ctr":
            import collections

            return collections.Counter(built)
        return built
    if tag == "dd":
        factory, pairs = _list(body, 2)
        if type(factory) is dict:  # the other side's own callable: a handle or a callback
            factory = decode(factory, other, deeper)
        elif factory is None or factory in _DEFAULT_FACTORIES:
            factory = _DEFAULT_FACTORIES.get(factory)
        else:
            raise ValueError("unknown default factory")
        return defaultdict(factory, _pairs(pairs, other, deeper))
    if tag in ("dk", "dv"):
        items = [decode(v, other, deeper) for v in _list(body)]
        if tag == "dk":
            _check_hashes(items)
        return dict.fromkeys(items).keys() if tag == "dk" else dict(enumerate(items)).values()
    if tag == "di":
        return dict(_pairs(body, other, deeper)).items()
    if tag == "arr":
        code, items = _list(body, 2)
        if code not in _ARRAY_CODES:
            raise ValueError("unknown array type")
        import array

        return array.array(code, decode(items, other, deeper))
    if tag in ("td", "tz", "date", "time", "dtm"):
        return _rebuild_time(tag, body)
    if tag == "dq":
        items, maxlen = _list(body, 2)
        if maxlen is not None and type(maxlen) is not int:
            raise ValueError("bad deque maxlen")
        return deque([decode(v, other, deeper) for v in _list(items)], maxlen)
    if tag == "i":
        return int(_str(body), 16)
    if tag == "x":
        return float(_str(body)) if body in ("nan", "inf", "-inf") else _bad()
    if tag == "c":
        real, imag = _list(body, 2)
        return complex(float(_str(real)), float(_str(imag)))
    if tag in ("b", "ba"):
        return (bytes if tag == "b" else bytearray).fromhex(_str(body))
    if tag == "q":
        numerator, denominator = _list(body, 2)
        import fractions

        return fractions.Fraction(int(_str(numerator), 16), int(_str(denominator), 16))
    if tag == "dec":
        import decimal

        return decimal.Decimal(_str(body))
    if tag == "r":
        start, stop, step = (decode(v, other, deeper) for v in _list(body, 3))
        if not all(type(v) is int for v in (start, stop, step)):
            raise ValueError("bad range")
        return range(start, stop, step)
    if tag == "nt":
        name, fields, items = _list(body, 3)
        values = [decode(v, other, deeper) for v in _list(items)]
        import collections

        return collections.namedtuple(_str(name), [_str(f) for f in _list(fields)])(*values)
    if tag in ("nd", "np"):
        return _numpy(tag, body, other, deeper)
    return other(tag, body)


def _numpy(tag, body, other, depth):
    import numpy

    if tag == "np":
        dtype, value = _list(body, 2)
        dtype = numpy.dtype(_str(dtype))
        return dtype.type(decode(value, other, depth)) if dtype.kind in _NUMPY_KINDS else _bad()
    dtype, shape, flat = _list(body, 3)
    dtype = numpy.dtype(_str(dtype))
    if dtype.kind not in _NUMPY_KINDS or not all(type(n) is int and n >= 0 for n in _list(shape)):
        raise ValueError("bad array")
    return numpy.array(decode(flat, other, depth), dtype=dtype).reshape(shape)


def _check_hashes(keys):
    """Refuse keys that share one hash too often: inserting them would take quadratic time."""
    if len(keys) > 4 * MAX_SAME_HASH:
        counts = {}
        for key in keys:
            value = hash(key)
            counts[value] = counts.get(value, 0) + 1
        if max(counts.values()) > MAX_SAME_HASH:
            raise ValueError("too many keys with one hash")


def _pairs(body, other, depth):
    pairs = [_list(p, 2) for p in _list(body)]
    keys = [decode(k, other, depth) for k, _ in pairs]
    _check_hashes(keys)
    return list(zip(keys, (decode(v, other, depth) for _, v in pairs)))


def _list(body, length=None):
    if type(body) is not list or (length is not None and len(body) != length):
        raise ValueError("not tagged data")
    return body


def _ints(body, length):
    if not all(type(n) is int for n in _list(body, length)):
        raise ValueError("not tagged data")
    return body


def _str(body):
    if type(body) is not str:
        raise ValueError("not tagged data")
    return body


def _bad():
    raise ValueError("not tagged data")


class Channel:
    """One side of the request/reply wire: ``ask`` sends and serves the peer's requests until its reply."""

    def __init__(self, reader, writer, cap, serve):
        self.reader, self.writer, self.cap, self.serve = reader, writer, cap, serve

    def send(self, message):
        self.writer.write(dumps(message).encode() + b"\n")

    def receive(self):
        line = self.reader.readline(self.cap + 1)
        if not line.endswith(b"\n"):
            raise ChannelClosed("the program stopped answering (it exited, crashed or sent too much)")
        message = loads(line[:-1].decode("utf-8"))
        if type(message) is not list or not message or type(message[0]) is not str:
            raise ValueError("not a message")
        return message

    def ask(self, message):
        self.send(message)
        while True:
            reply = self.receive()
            if reply[0] in REPLIES:
                return reply
            self.send(self.serve(reply))
