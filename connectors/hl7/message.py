"""The parsed message: segments split into fields lazily, components on demand.

A :class:`Message` keeps the decoded text of each segment. A :class:`Segment` splits
itself into fields on first access; :meth:`Segment.get` splits one field into
repetitions, components and sub-components only as far as asked, and unescapes
only values that contain the escape character. No per-field objects are built.
For the translator's hot path, :meth:`Segment.first_values` reads the first value
of several fields in one call and :meth:`Segment.component_values` several
components of one field from one split (both give exactly what ``get`` gives);
:meth:`Segment.read` (and :meth:`Message.read`, by segment name) reads all a
:class:`Layout` names, first values and components, in one call. A segment with no
repetition, sub-component or escape character in its fields (most are) is noticed
when it is split, and read by the component separator alone.

Field numbers are 1-based as in the HL7 standard. In ``MSH`` (and ``FHS``/``BHS``)
field 1 is the field separator itself and field 2 the encoding characters, so
``msh.get(9, 2)`` is the trigger event. An explicit HL7 null (``""``) is returned
as the two-character string ``'""'``.

``repr()`` of these objects shows names, counts and control ids, never content.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import itemgetter
from typing import cast

from connectors.hl7.charset import DEFAULT_FALLBACK, codec_for
from connectors.hl7.encoding import Encoding
from connectors.hl7.escape import unescape

#: Segments whose field 1 is the field separator and field 2 the encoding characters.
HEADER_SEGMENTS = frozenset({"MSH", "FHS", "BHS"})


class Layout:
    """What :meth:`Segment.read` reads of a segment: first values, then components.

    ``fields`` are field numbers whose first value is read (as :meth:`Segment.get`);
    ``components`` are ``(field, count)`` pairs whose components ``1..count`` are read
    (as :meth:`Segment.component_values`). With ``null_as_empty`` an HL7 null (``""``)
    is read as an empty string. Built once (a module constant), checked here so that
    reading needs no checks.
    """

    __slots__ = ("components", "fields", "header_safe", "null_as_empty", "pick", "span", "width")

    def __init__(
        self,
        fields: tuple[int, ...],
        components: tuple[tuple[int, int], ...] = (),
        *,
        null_as_empty: bool = False,
    ) -> None:
        if any(field < 1 for field in fields) or any(
            field < 1 or count < 1 for field, count in components
        ):
            raise ValueError("HL7 positions start at 1")
        self.fields = fields
        self.components = components
        self.null_as_empty = null_as_empty
        #: How many values a read gives.
        self.width = len(fields) + sum(count for _, count in components)
        numbers = (*fields, *(field for field, _ in components))
        #: No MSH-1 or MSH-2 (whole values, not split) among the fields read.
        self.header_safe = all(number > 2 for number in numbers)
        #: How many items a segment's field list needs for every field read to be in it.
        self.span = max(numbers, default=0) + 1
        #: ``fields`` picked from a field list, as a tuple, in one call.
        self.pick: Callable[[list[str]], tuple[str, ...]] = (
            itemgetter(*fields)
            if len(fields) > 1
            else lambda split: tuple(split[f] for f in fields)
        )

    def __repr__(self) -> str:
        return f"Layout({self.fields!r}, {self.components!r}, null_as_empty={self.null_as_empty})"


#: HL7's explicit null, read as an empty string by a ``null_as_empty`` :class:`Layout`.
_NULL = '""'

#: Stands in for a delimiter MSH-2 does not define: a lone surrogate never occurs in
#: decoded text, so ``in`` and ``split`` on it never match.
_ABSENT = chr(0xDFFF)


class _Context:
    """What every segment of one message shares: delimiters and character sets."""

    __slots__ = (
        "_charset",
        "_resolved",
        "cs",
        "encoding",
        "es",
        "fallback",
        "fs",
        "msh_text",
        "rs",
        "ss",
    )

    def __init__(self, encoding: Encoding, fallback: str, msh_text: str) -> None:
        self.encoding = encoding
        self.fs = encoding.field
        self.cs = encoding.component or _ABSENT
        self.rs = encoding.repetition or _ABSENT
        self.es = encoding.escape or _ABSENT
        self.ss = encoding.subcomponent or _ABSENT
        self._charset: str | None = None
        self._resolved = False
        self.fallback = fallback
        self.msh_text = msh_text

    @property
    def charset(self) -> str | None:
        """The declared (MSH-18) codec, resolved on first use; ``None`` when none."""
        if not self._resolved:
            fields = self.msh_text.split(self.fs, 18)
            declared = fields[17] if len(fields) > 17 else ""
            declared = declared.split(self.rs, 1)[0].split(self.cs, 1)[0]
            self._charset = codec_for(declared)
            self._resolved = True
        return self._charset

    def unescape(self, value: str) -> str:
        return unescape(value, self.encoding, self.charset, self.fallback)


class Segment:
    """One segment. Fields are split from the segment text on first access."""

    __slots__ = ("_ctx", "_fields", "_header", "_plain", "name", "text")

    def __init__(self, name: str, text: str, ctx: _Context) -> None:
        self.name = name
        #: The segment as received (decoded, escaped, without its terminator).
        self.text = text
        self._ctx = ctx
        self._fields: list[str] | None = None
        self._header = name in HEADER_SEGMENTS
        #: Set by _split: no repetition, sub-component or escape character in any field
        #: (MSH-1 and MSH-2 aside), so a field splits on the component separator alone.
        self._plain = False

    def __repr__(self) -> str:
        return f"<Segment {self.name} with {self.field_count} fields>"

    @property
    def encoding(self) -> Encoding:
        """The delimiters of the message this segment belongs to."""
        return self._ctx.encoding

    def _split(self) -> list[str]:
        fields = self._fields
        if fields is None:
            ctx = self._ctx
            text = self.text
            fields = self._fields = text.split(ctx.fs)
            if self._header:
                # fields[0] is the name and fields[1] MSH-2: insert MSH-1 so that the
                # list index is the HL7 field number.
                fields.insert(1, ctx.fs)
                text = text[len(fields[0]) + len(fields[2]) + 2 :]
            self._plain = not (ctx.rs in text or ctx.ss in text or ctx.es in text)
        return fields

    @property
    def field_count(self) -> int:
        """The number of the last field present (empty trailing fields included)."""
        return len(self._split()) - 1

    def raw(self, field: int) -> str:
        """Field ``field`` as received: every repetition, still escaped; ``""`` when absent."""
        if field < 1:
            raise ValueError("HL7 field numbers start at 1")
        fields = self._fields or self._split()
        return fields[field] if field < len(fields) else ""

    def get(
        self, field: int, component: int = 1, subcomponent: int = 1, repetition: int = 1
    ) -> str:
        """One value, unescaped; ``""`` when absent. All positions are 1-based."""
        if component == 1 and subcomponent == 1 and repetition == 1 and field > 0:
            # The usual question, a field's first value: no need to split it fully.
            fields = self._fields or self._split()
            if field >= len(fields):
                return ""
            value = fields[field]
            if not value or value.isalnum():  # delimiters are never alphanumeric
                return value
            if self._header and field <= 2:
                return value
            return self._first_value(value)
        return self._get(field, component, subcomponent, repetition)

    def first_values(self, *fields: int) -> list[str]:
        """``[self.get(field) for field in fields]`` in one call: each field's first value.

        Reading a segment's fields in one go is the translator's hot path.
        """
        if fields and min(fields) < 1:
            raise ValueError("HL7 positions start at 1")
        split = self._fields or self._split()
        count = len(split)
        header = self._header
        if self._plain:
            # No repetition, sub-component or escape: a first value is whatever
            # precedes the first component separator (MSH-1 and MSH-2 are whole).
            cs = self._ctx.cs
            if not header:
                return [split[field].partition(cs)[0] if field < count else "" for field in fields]
            return [
                ""
                if field >= count
                else split[field]
                if field <= 2
                else split[field].partition(cs)[0]
                for field in fields
            ]
        ctx = self._ctx
        rs, cs, ss, es = ctx.rs, ctx.cs, ctx.ss, ctx.es
        values = []
        for field in fields:
            value = split[field] if field < count else ""
            if value and not (header and field <= 2):
                value = value.partition(rs)[0].partition(cs)[0].partition(ss)[0]
                if es in value:
                    value = ctx.unescape(value)
            values.append(value)
        return values

    def read(self, layout: Layout) -> list[str]:
        """A segment's reads in one call, as one list: the first value of each of
        ``layout.fields`` (as :meth:`first_values`), then components ``1..count`` of each
        ``(field, count)`` in ``layout.components`` (as :meth:`component_values`).

        Equal to ``first_values(*fields) + component_values(f, count) + ...`` (with
        ``""`` for each HL7 null when ``layout.null_as_empty``). Texts without a
        repetition, sub-component or escape character (most) are read by the component
        separator alone; the fields' first values are taken all at once when none of
        them has one.
        """
        split = self._fields or self._split()
        if self._header and not layout.header_safe:  # MSH-1 or MSH-2 asked for: rare
            values = self.first_values(*layout.fields)
            for field, count in layout.components:
                values += self.component_values(field, count)
        else:
            ctx = self._ctx
            cs, rs, ss, es = ctx.cs, ctx.rs, ctx.ss, ctx.es
            plain = self._plain
            if len(split) < layout.span:  # absent trailing fields read as empty
                split = split + [""] * (layout.span - len(split))
            picked = layout.pick(split)
            joined = "".join(picked)
            if plain or not (rs in joined or ss in joined or es in joined):
                values = [text.partition(cs)[0] for text in picked] if cs in joined else [*picked]
            else:
                values = [self._first_value(text) for text in picked]
            for field, count in layout.components:
                text = split[field]
                if plain or not (rs in text or ss in text or es in text):
                    parts = text.split(cs)
                else:
                    parts = self._components(text, 1)
                found = len(parts)
                if found < count:
                    parts += [""] * (count - found)
                elif found > count:
                    del parts[count:]
                values += parts
        # A plain segment's values are parts of its text: no null in the text, none read.
        if layout.null_as_empty and (not self._plain or _NULL in self.text) and _NULL in values:
            return ["" if value == _NULL else value for value in values]
        return values

    def component_values(self, field: int, count: int, repetition: int = 1) -> list[str]:
        """``[self.get(field, c, 1, repetition) for c in 1..count]``, splitting the field once.

        Each component's first sub-component, unescaped; ``""`` when absent.
        """
        if field < 1 or repetition < 1:
            raise ValueError("HL7 positions start at 1")
        split = self._fields or self._split()
        value = split[field] if field < len(split) else ""
        if not value or (self._header and field <= 2):
            parts = [value] if repetition == 1 else []
        elif self._plain:
            parts = value.split(self._ctx.cs) if repetition == 1 else []
        else:
            parts = self._components(value, repetition)
        size = len(parts)
        if size < count:
            parts.extend([""] * (count - size))
        elif size > count:
            del parts[count:]
        return parts

    def repetition_values(self, field: int, count: int) -> list[list[str]]:
        """``component_values(field, count, r)`` for every repetition ``r``, splitting once.

        ``[]`` when the field is empty (as :meth:`repetitions` gives 0).
        """
        if field < 1:
            raise ValueError("HL7 positions start at 1")
        split = self._fields or self._split()
        value = split[field] if field < len(split) else ""
        if not value:
            return []
        if self._header and field <= 2:
            found = [[value]]
        elif self._plain:
            found = [value.split(self._ctx.cs)]
        else:
            ctx = self._ctx
            found = []
            for rep in value.split(ctx.rs):
                parts = rep.split(ctx.cs)
                if ctx.ss in rep:
                    parts = [part.split(ctx.ss, 1)[0] for part in parts]
                if ctx.es in rep:
                    parts = [ctx.unescape(part) if ctx.es in part else part for part in parts]
                found.append(parts)
        for parts in found:
            size = len(parts)
            if size < count:
                parts.extend([""] * (count - size))
            elif size > count:
                del parts[count:]
        return found

    def all_components(self, field: int) -> list[list[str]]:
        """``[self.components(field, r) for r in 1..self.repetitions(field)]``, splitting once.

        Linear in the field's size however many repetitions it has (asking
        :meth:`components` for each repetition splits the whole field each time).
        """
        if field < 1:
            raise ValueError("HL7 field numbers start at 1")
        split = self._fields or self._split()
        value = split[field] if field < len(split) else ""
        if not value:
            return []
        if self._header and field <= 2:
            return [[value]]
        ctx = self._ctx
        if self._plain:
            return [value.split(ctx.cs)]
        found: list[list[str]] = []
        for rep in value.split(ctx.rs):
            if not rep:
                found.append([])
            elif ctx.es in rep:
                found.append([ctx.unescape(c) if ctx.es in c else c for c in rep.split(ctx.cs)])
            else:
                found.append(rep.split(ctx.cs))
        return found

    def _components(self, value: str, repetition: int) -> list[str]:
        """The components of one repetition of ``value``: first sub-components, unescaped."""
        ctx = self._ctx
        if ctx.rs in value:
            repetitions = value.split(ctx.rs)
            if repetition > len(repetitions):
                return []
            value = repetitions[repetition - 1]
        elif repetition != 1:
            return []
        parts = value.split(ctx.cs)
        if ctx.ss in value:
            parts = [part.split(ctx.ss, 1)[0] for part in parts]
        if ctx.es in value:
            parts = [ctx.unescape(part) if ctx.es in part else part for part in parts]
        return parts

    def _first_value(self, value: str) -> str:
        """The first sub-component of the first component of the first repetition."""
        ctx = self._ctx
        if self._plain:
            return value.partition(ctx.cs)[0]
        value = value.partition(ctx.rs)[0].partition(ctx.cs)[0].partition(ctx.ss)[0]
        return ctx.unescape(value) if ctx.es in value else value

    def _get(self, field: int, component: int, subcomponent: int, repetition: int) -> str:
        if field < 1 or component < 1 or subcomponent < 1 or repetition < 1:
            raise ValueError("HL7 positions start at 1")
        fields = self._fields or self._split()
        if field >= len(fields):
            return ""
        value = fields[field]
        if not value:
            return ""
        if self._header and field <= 2:
            return value if component == subcomponent == repetition == 1 else ""
        ctx = self._ctx
        sep = ctx.rs
        if sep in value:
            parts = value.split(sep)
            if repetition > len(parts):
                return ""
            value = parts[repetition - 1]
        elif repetition != 1:
            return ""
        sep = ctx.cs
        if sep in value:
            parts = value.split(sep)
            if component > len(parts):
                return ""
            value = parts[component - 1]
        elif component != 1:
            return ""
        sep = ctx.ss
        if sep in value:
            parts = value.split(sep)
            if subcomponent > len(parts):
                return ""
            value = parts[subcomponent - 1]
        elif subcomponent != 1:
            return ""
        if ctx.es in value:
            return ctx.unescape(value)
        return value

    def repetitions(self, field: int) -> int:
        """How many repetitions field ``field`` has (0 when empty)."""
        value = self.raw(field)
        if not value:
            return 0
        if self._plain or (self._header and field <= 2):
            return 1
        return value.count(self._ctx.rs) + 1

    def components(self, field: int, repetition: int = 1) -> list[str]:
        """The components of one repetition, each unescaped; ``[]`` when absent.

        A component's sub-components stay joined by the sub-component separator
        (use :meth:`get` with ``subcomponent`` to pick one).
        """
        if field < 1:
            raise ValueError("HL7 field numbers start at 1")
        fields = self._fields or self._split()
        value = fields[field] if field < len(fields) else ""
        if not value:
            return []
        if self._header and field <= 2:
            return [value] if repetition == 1 else []
        if repetition < 1:
            raise ValueError("HL7 positions start at 1")
        ctx = self._ctx
        if self._plain:
            return value.split(ctx.cs) if repetition == 1 else []
        if ctx.rs in value:
            parts = value.split(ctx.rs)
            if repetition > len(parts):
                return []
            value = parts[repetition - 1]
        elif repetition != 1:
            return []
        if not value:
            return []
        comps = value.split(ctx.cs)
        if ctx.es in value:
            return [ctx.unescape(c) if ctx.es in c else c for c in comps]
        return comps


class Message:
    """A parsed HL7 v2 message. Build one with :func:`connectors.hl7.parse_message`."""

    __slots__ = ("_ctx", "_lines", "_names", "_segments", "charset")

    def __init__(
        self,
        names: list[str],
        lines: list[str],
        encoding: Encoding,
        *,
        charset: str | None = None,
        fallback_charset: str = DEFAULT_FALLBACK,
    ) -> None:
        self._names = names
        self._lines = lines
        self._segments: list[Segment | None] = [None] * len(names)
        self._ctx = _Context(encoding, fallback_charset, lines[0])
        #: The codec the bytes were decoded with (``None`` when parsed from text).
        self.charset = charset

    def __repr__(self) -> str:
        return (
            f"<Message {self.message_type}^{self.trigger_event} control_id={self.control_id!r} "
            f"with {len(self._names)} segments>"
        )

    def _segment(self, index: int) -> Segment:
        segment = self._segments[index]
        if segment is None:
            segment = self._segments[index] = Segment(
                self._names[index], self._lines[index], self._ctx
            )
        return segment

    @property
    def encoding(self) -> Encoding:
        """The delimiters read from MSH-1 and MSH-2."""
        return self._ctx.encoding

    @property
    def declared_charset(self) -> str | None:
        """The Python codec MSH-18 names, or ``None`` when it is empty or unknown."""
        return self._ctx.charset

    @property
    def names(self) -> list[str]:
        """The segment names, in order."""
        return list(self._names)

    @property
    def segments(self) -> list[Segment]:
        """Every segment, in order (Z-segments included)."""
        segments = self._segments
        if None in segments:
            ctx = self._ctx
            for index, (name, line) in enumerate(zip(self._names, self._lines, strict=True)):
                if segments[index] is None:
                    segments[index] = Segment(name, line, ctx)
        return cast(list[Segment], segments.copy())  # no None left

    @property
    def msh(self) -> Segment:
        """The MSH segment (always the first)."""
        segment = self._segments[0]
        if segment is None:
            segment = self._segments[0] = Segment(self._names[0], self._lines[0], self._ctx)
        return segment

    def first(self, name: str) -> Segment | None:
        """The first segment called ``name``, or ``None``."""
        names = self._names
        if name not in names:
            return None
        index = names.index(name)
        segment = self._segments[index]
        if segment is None:
            segment = self._segments[index] = Segment(name, self._lines[index], self._ctx)
        return segment

    def read(self, name: str, layout: Layout) -> list[str]:
        """``first(name).read(layout)``, or ``[""] * layout.width`` when there is no such
        segment: one call for the translator's hot path."""
        names = self._names
        if name not in names:
            return [""] * layout.width
        index = names.index(name)
        segment = self._segments[index]
        if segment is None:
            segment = self._segments[index] = Segment(name, self._lines[index], self._ctx)
        return segment.read(layout)

    def all(self, name: str) -> list[Segment]:
        """Every segment called ``name``, in order."""
        return [self._segment(i) for i, n in enumerate(self._names) if n == name]

    @property
    def text(self) -> str:
        """The message as text, segments joined by CR (as HL7 prescribes)."""
        return "\r".join(self._lines)

    @property
    def version(self) -> str:
        """MSH-12.1, the HL7 version (``"2.5.1"``)."""
        return self.msh.get(12)

    @property
    def control_id(self) -> str:
        """MSH-10, the message control id."""
        return self.msh.get(10)

    @property
    def message_type(self) -> str:
        """MSH-9.1 (``"ADT"``)."""
        return self.msh.get(9)

    @property
    def trigger_event(self) -> str:
        """MSH-9.2 (``"A01"``)."""
        return self.msh.get(9, 2)

    @property
    def sending_facility(self) -> str:
        """MSH-4.1."""
        return self.msh.get(4)

    @property
    def receiving_facility(self) -> str:
        """MSH-6.1."""
        return self.msh.get(6)
