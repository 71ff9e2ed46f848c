"""Carrier location from SIP: PIDF-LO bodies (RFC 4119/5491/5139) and Asterisk's GEOLOC_PROFILE.

Geodetic shapes are reduced to what a console and a dispatcher use: a centre, a radius and an
altitude. Point, Circle and Sphere are exact; Ellipse/Ellipsoid keep the semi-major axis as the
radius, ArcBand its origin and outer radius, Polygon/Prism the vertex centroid and the radius
that encloses every vertex, each with a warning saying so.

XML is parsed with expat directly so a DOCTYPE or ENTITY declaration is refused before any
expansion happens (billion laughs, external entities); documents are limited to 64 KiB.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NoReturn
from xml.parsers import expat

from ari_app.location.model import Location, LocationParseError

__all__ = ["CIVIC_ELEMENTS", "parse_geoloc_profile_vars", "parse_pidf_lo"]

MAX_XML_BYTES = 64 * 1024
MAX_XML_DEPTH = 32
MAX_VARS_CHARS = 4096

PIDF = "urn:ietf:params:xml:ns:pidf"
DATA_MODEL = "urn:ietf:params:xml:ns:pidf:data-model"
GEOPRIV = "urn:ietf:params:xml:ns:pidf:geopriv10"
CIVIC = "urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr"
GML = "http://www.opengis.net/gml"
GEOSHAPE = "http://www.opengis.net/pidflo/1.0"
CONFIDENCE = "urn:ietf:params:xml:ns:geopriv:conf"

CRS_2D = "urn:ogc:def:crs:EPSG::4326"
CRS_3D = "urn:ogc:def:crs:EPSG::4979"
UOM_METRE = "urn:ogc:def:uom:EPSG::9001"

# RFC 4776 / RFC 5139 civic address elements.
CIVIC_ELEMENTS = frozenset({
    "country", "A1", "A2", "A3", "A4", "A5", "A6", "PRD", "POD", "STS", "HNO", "HNS", "LMK",
    "LOC", "FLR", "NAM", "PC", "BLD", "UNIT", "ROOM", "SEAT", "PLC", "PCN", "POBOX", "ADDCODE",
    "RD", "RDSEC", "RDBR", "RDSUBBR", "PRM", "POM",
})
MAX_CIVIC_VALUE = 200

# IANA geopriv method tokens (RFC 4119 and later registrations), reduced to the model's methods.
_METHOD_TOKENS = {
    "gps": "GNSS", "a-gps": "GNSS", "hybrida-gps": "GNSS", "gnss": "GNSS", "a-gnss": "GNSS",
    "802.11": "WiFi", "wifi": "WiFi", "wi-fi": "WiFi", "wlan": "WiFi",
    "cell": "Cell", "triangulation": "Cell", "otdoa": "Cell", "e-otd": "Cell", "u-tdoa": "Cell",
    "aflt": "Cell", "eflt": "Cell", "ipdl": "Cell", "ecid": "Cell", "e-cid": "Cell",
    "manual": "Manual",
    "dhcp": "Network", "wiremap": "Network", "lldp-med": "Network",
    "unknown": "Unknown",
}

_NUMBER = re.compile(r"[+-]?\d{1,9}(?:\.\d{1,15})?")
_DISTANCE = re.compile(r"\d{1,9}(?:\.\d{1,9})?")
_COUNTRY = re.compile(r"[A-Za-z]{2}")
_ENTITY_NUMBER = re.compile(r"(?:pres|sip|sips|tel):(\+?\d{3,20})(?:[@;].*)?", re.IGNORECASE)
_EARTH_RADIUS_M = 6_371_008.8

_Point = tuple[float, float, float | None]  # latitude, longitude, altitude (metres) or None


def _show(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "…")


def method_from_token(token: str, warnings: list[str]) -> str:
    """Map a geopriv/Asterisk method token to a model method, noting tokens we do not know."""
    token = token.strip()
    if not token:
        return "Unknown"
    method = _METHOD_TOKENS.get(token.lower())
    if method is None:
        warnings.append(f"unrecognised method {_show(token)}")
        return "Unknown"
    return method


# ---------------------------------------------------------------------------------------------
# shapes, shared by the XML and the Asterisk variable forms


@dataclass
class _Shape:
    kind: str
    points: list[_Point]
    radius: float | None = None  # Circle, Sphere
    semi_major: float | None = None  # Ellipse, Ellipsoid
    outer_radius: float | None = None  # ArcBand


@dataclass(frozen=True)
class _Reduced:
    latitude: float
    longitude: float
    radius_m: float | None
    altitude_m: float | None


def _haversine_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(
        (lon2 - lon1) / 2
    ) ** 2
    return 2 * _EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def _reduce(shape: _Shape, warnings: list[str]) -> _Reduced:
    first = shape.points[0]
    if shape.kind in ("Point", "Circle", "Sphere"):
        return _Reduced(first[0], first[1], shape.radius, first[2])
    if shape.kind in ("Ellipse", "Ellipsoid"):
        warnings.append(f"{shape.kind} reduced to a circle of its semi-major axis")
        return _Reduced(first[0], first[1], shape.semi_major, first[2])
    if shape.kind == "ArcBand":
        warnings.append("ArcBand reduced to its origin and outer radius")
        return _Reduced(first[0], first[1], shape.outer_radius, first[2])
    # Polygon, Prism: a ring repeats its first vertex at the end; count it once.
    vertices = shape.points
    if len(vertices) > 3 and vertices[0] == vertices[-1]:
        vertices = vertices[:-1]
    latitude = sum(p[0] for p in vertices) / len(vertices)
    longitude = sum(p[1] for p in vertices) / len(vertices)
    radius = max(_haversine_m((latitude, longitude), (p[0], p[1])) for p in vertices)
    warnings.append(f"{shape.kind} reduced to its centroid and enclosing radius")
    altitude = first[2]
    return _Reduced(round(latitude, 7), round(longitude, 7), round(radius, 1), altitude)


def _position(text: str, dimensions: int | None, where: str, raw: str) -> _Point:
    parts = text.split()
    if len(parts) not in (2, 3) or (dimensions is not None and len(parts) != dimensions):
        expected = "'lat lon' or 'lat lon alt'" if dimensions is None else (
            "'lat lon'" if dimensions == 2 else "'lat lon alt'"
        )
        raise LocationParseError(f"{where} must be {expected}, got {_show(text)}", raw)
    for part in parts:
        if not _NUMBER.fullmatch(part):
            raise LocationParseError(f"{where} must be decimal numbers, got {_show(text)}", raw)
    latitude, longitude = float(parts[0]), float(parts[1])
    if not -90 <= latitude <= 90:
        raise LocationParseError(f"{where} latitude out of range -90..90: {latitude}", raw)
    if not -180 <= longitude <= 180:
        raise LocationParseError(f"{where} longitude out of range -180..180: {longitude}", raw)
    return latitude, longitude, float(parts[2]) if len(parts) == 3 else None


def _distance(text: str, where: str, raw: str) -> float:
    value = text.strip()
    if not _DISTANCE.fullmatch(value):
        raise LocationParseError(f"{where} must be a distance in metres, got {_show(value)}", raw)
    return float(value)


# ---------------------------------------------------------------------------------------------
# XML parsing with entity declarations refused


class _Refused(Exception):
    pass


def _clark(name: str) -> str:
    uri, separator, local = name.rpartition(" ")
    return f"{{{uri}}}{local}" if separator else name


def _parse_xml(data: str | bytes, raw: str) -> ET.Element:
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate(namespace_separator=" ")
    depth = 0

    def start(name: str, attributes: dict[str, str]) -> None:
        nonlocal depth
        depth += 1
        if depth > MAX_XML_DEPTH:
            raise _Refused(f"XML is nested deeper than {MAX_XML_DEPTH} elements")
        builder.start(_clark(name), {_clark(key): value for key, value in attributes.items()})

    def end(name: str) -> None:
        nonlocal depth
        depth -= 1
        builder.end(_clark(name))

    def refuse_doctype(*_: object) -> NoReturn:
        raise _Refused("DOCTYPE declarations are not accepted (entity expansion risk)")

    def refuse_entity(*_: object) -> NoReturn:
        raise _Refused("ENTITY declarations are not accepted (entity expansion risk)")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    parser.StartDoctypeDeclHandler = refuse_doctype
    parser.EntityDeclHandler = refuse_entity
    parser.UnparsedEntityDeclHandler = refuse_entity
    parser.ExternalEntityRefHandler = refuse_entity
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.buffer_text = True
    try:
        parser.Parse(data, True)
        return builder.close()
    except _Refused as refused:
        raise LocationParseError(str(refused), raw) from None
    except expat.ExpatError as error:
        raise LocationParseError(f"not well-formed XML: {error}", raw) from None
    except (ValueError, LookupError) as error:  # unknown or lying encoding declarations
        raise LocationParseError(f"unreadable XML: {error}", raw) from None


# ---------------------------------------------------------------------------------------------
# PIDF-LO


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _namespace(tag: str) -> str:
    return tag[1:].partition("}")[0] if tag.startswith("{") else ""


def parse_pidf_lo(xml: str | bytes) -> Location:
    """Parse a PIDF-LO document: GML Point/Circle/other shapes and/or a civic address."""
    raw = xml if isinstance(xml, str) else xml.decode("utf-8", errors="replace")
    size = len(xml.encode("utf-8", errors="surrogatepass")) if isinstance(xml, str) else len(xml)
    if size > MAX_XML_BYTES:
        raise LocationParseError(f"PIDF-LO is {size} bytes; the limit is {MAX_XML_BYTES}", raw)
    if isinstance(xml, str):
        try:
            xml.encode("utf-8")
        except UnicodeEncodeError:
            raise LocationParseError("PIDF-LO text contains unencodable characters", raw) from None
    root = _parse_xml(xml, raw)
    if root.tag != f"{{{PIDF}}}presence":
        raise LocationParseError(f"root element must be PIDF presence, got {_show(root.tag)}", raw)

    warnings: list[str] = []
    shapes: list[_Shape] = []
    civics: list[dict[str, str]] = []
    confidence: float | None = None
    method: str | None = None
    geoprivs = list(root.iter(f"{{{GEOPRIV}}}geopriv"))
    if not geoprivs:
        raise LocationParseError("no gp:geopriv element: the document carries no location", raw)
    for geopriv in geoprivs:
        info = geopriv.find(f"{{{GEOPRIV}}}location-info")
        if info is None:
            raise LocationParseError("gp:geopriv has no gp:location-info", raw)
        for child in info:
            if child.tag == f"{{{CIVIC}}}civicAddress":
                civics.append(_civic_from_xml(child, warnings, raw))
            elif child.tag == f"{{{CONFIDENCE}}}confidence":
                confidence = _confidence(child.text or "", raw)
            elif _namespace(child.tag) in (GML, GEOSHAPE):
                shapes.append(_shape_from_xml(child, raw))
            else:
                warnings.append(f"ignored element {_show(_local(child.tag))} in location-info")
        token = geopriv.findtext(f"{{{GEOPRIV}}}method")
        if token is not None and method is None:
            method = method_from_token(token, warnings)
    if not shapes and not civics:
        raise LocationParseError("location-info has no geodetic shape and no civic address", raw)
    if len(shapes) > 1:
        warnings.append(f"{len(shapes)} shapes in the document; used the first")
    if len(civics) > 1:
        warnings.append(f"{len(civics)} civic addresses in the document; used the first")

    reduced = _reduce(shapes[0], warnings) if shapes else None
    return Location(
        source="pidf",
        raw=raw,
        latitude=reduced.latitude if reduced else None,
        longitude=reduced.longitude if reduced else None,
        radius_m=reduced.radius_m if reduced else None,
        altitude_m=reduced.altitude_m if reduced else None,
        confidence_pct=confidence,
        method=method or "Unknown",
        fix_time=_timestamp(root, raw),
        caller_number=_entity_number(root.get("entity", "")),
        civic=civics[0] if civics else None,
        warnings=tuple(warnings),
    )


def _shape_from_xml(element: ET.Element, raw: str) -> _Shape:
    kind = _local(element.tag)
    srs = element.get("srsName")
    if srs is not None and srs not in (CRS_2D, CRS_3D):
        raise LocationParseError(
            f"{kind} srsName must be {CRS_2D} or {CRS_3D}, got {_show(srs)}", raw
        )
    dimensions = None if srs is None else (2 if srs == CRS_2D else 3)
    supported = ("Point", "Circle", "Sphere", "Ellipse", "Ellipsoid", "ArcBand", "Polygon", "Prism")
    if kind not in supported:
        raise LocationParseError(f"unsupported shape {_show(kind)}", raw)

    def distance(name: str) -> float:
        child = element.find(f"{{{GEOSHAPE}}}{name}")
        if child is None:
            raise LocationParseError(f"{kind} has no gs:{name}", raw)
        uom = child.get("uom")
        if uom != UOM_METRE:
            raise LocationParseError(
                f"{kind} {name} uom must be {UOM_METRE}, got {_show(uom or '')}", raw
            )
        return _distance(child.text or "", f"{kind} {name}", raw)

    if kind in ("Polygon", "Prism"):
        return _Shape(kind, _ring(element, dimensions, raw))
    pos = element.find(f"{{{GML}}}pos")
    if pos is None:
        raise LocationParseError(f"{kind} has no gml:pos", raw)
    point = _position(pos.text or "", dimensions, f"{kind} gml:pos", raw)
    if kind == "Point":
        return _Shape(kind, [point])
    if kind in ("Circle", "Sphere"):
        return _Shape(kind, [point], radius=distance("radius"))
    if kind in ("Ellipse", "Ellipsoid"):
        return _Shape(kind, [point], semi_major=distance("semiMajorAxis"))
    return _Shape(kind, [point], outer_radius=distance("outerRadius"))


def _ring(element: ET.Element, dimensions: int | None, raw: str) -> list[_Point]:
    kind = _local(element.tag)
    ring = next(element.iter(f"{{{GML}}}LinearRing"), None)
    if ring is None:
        raise LocationParseError(f"{kind} has no gml:LinearRing", raw)
    pos_list = ring.find(f"{{{GML}}}posList")
    if pos_list is not None:
        numbers = (pos_list.text or "").split()
        width = dimensions or 2
        if len(numbers) % width:
            raise LocationParseError(f"{kind} gml:posList is not a list of {width}-d points", raw)
        texts = [" ".join(numbers[i : i + width]) for i in range(0, len(numbers), width)]
    else:
        texts = [pos.text or "" for pos in ring.findall(f"{{{GML}}}pos")]
    points = [_position(text, dimensions, f"{kind} vertex", raw) for text in texts]
    if len(points) < 3:
        raise LocationParseError(f"{kind} needs at least 3 vertices, got {len(points)}", raw)
    return points


def _civic_from_xml(element: ET.Element, warnings: list[str], raw: str) -> dict[str, str]:
    civic: dict[str, str] = {}
    for child in element:
        if _namespace(child.tag) != CIVIC:
            warnings.append(f"ignored civic extension {_show(_local(child.tag))}")
            continue
        _add_civic(civic, _local(child.tag), (child.text or "").strip(), raw)
    return _checked_civic(civic, raw)


def _add_civic(civic: dict[str, str], key: str, value: str, raw: str) -> None:
    if key not in CIVIC_ELEMENTS:
        raise LocationParseError(f"unknown civic element {_show(key)}", raw)
    if key in civic:
        raise LocationParseError(f"duplicate civic element {_show(key)}", raw)
    if len(value) > MAX_CIVIC_VALUE or not value.isprintable():
        raise LocationParseError(
            f"civic {key} must be printable text of at most {MAX_CIVIC_VALUE} characters", raw
        )
    if value:
        civic[key] = value


def _checked_civic(civic: dict[str, str], raw: str) -> dict[str, str]:
    country = civic.get("country")
    if country is not None:
        if not _COUNTRY.fullmatch(country):
            raise LocationParseError(
                f"civic country must be an ISO 3166 alpha-2 code, got {_show(country)}", raw
            )
        civic["country"] = country.upper()
    if not civic:
        raise LocationParseError("civic address is empty", raw)
    return civic


def _confidence(text: str, raw: str) -> float:
    value = text.strip()
    if not _DISTANCE.fullmatch(value) or float(value) > 100:
        raise LocationParseError(f"confidence must be a percentage 0-100, got {_show(value)}", raw)
    return float(value)


def _timestamp(root: ET.Element, raw: str) -> datetime | None:
    for element in root.iter():
        if element.tag in (f"{{{PIDF}}}timestamp", f"{{{DATA_MODEL}}}timestamp"):
            text = (element.text or "").strip()
            try:
                moment = datetime.fromisoformat(text)
            except ValueError:
                raise LocationParseError(
                    f"timestamp must be RFC 3339 date-time, got {_show(text)}", raw
                ) from None
            if moment.tzinfo is None:
                raise LocationParseError(f"timestamp has no UTC offset: {_show(text)}", raw)
            try:
                return moment.astimezone(UTC)
            except OverflowError:
                raise LocationParseError(f"timestamp out of range: {_show(text)}", raw) from None
    return None


def _entity_number(entity: str) -> str | None:
    match = _ENTITY_NUMBER.fullmatch(entity.strip())
    return match.group(1) if match else None


# ---------------------------------------------------------------------------------------------
# Asterisk res_geolocation: GEOLOC_PROFILE(location_info), (format), (method)

_VAR_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_GML_KEYS = {
    "shape", "crs", "pos", "pos3d", "radius", "height", "orientation", "semiMajorAxis",
    "semiMinorAxis", "verticalAxis", "innerRadius", "outerRadius", "startAngle", "openingAngle",
}
_SHAPES = {
    name.lower(): name
    for name in ("Point", "Circle", "Sphere", "Ellipse", "Ellipsoid", "ArcBand", "Polygon", "Prism")
}


def _fail(reason: str, raw: str) -> NoReturn:
    raise LocationParseError(reason, raw)


def _split_vars(text: str, raw: str) -> list[tuple[str, str]]:
    """Split Asterisk's ``key="value",key=value`` list; quoted values may hold commas."""
    pairs: list[tuple[str, str]] = []
    position, length = 0, len(text)
    while True:
        while position < length and (text[position] in ", \t"):
            position += 1
        if position >= length:
            return pairs
        match = _VAR_NAME.match(text, position)
        if match is None:
            _fail(f"location_info: expected a name at {_show(text[position:], 15)}", raw)
        key, position = match.group(), match.end()
        if position >= length or text[position] != "=":
            _fail(f"location_info: {_show(key)} has no '='", raw)
        position += 1
        if position < length and text[position] == '"':
            chars: list[str] = []
            position += 1
            while position < length and text[position] != '"':
                if text[position] == "\\" and position + 1 < length:
                    position += 1
                chars.append(text[position])
                position += 1
            if position >= length:
                _fail(f"location_info: value of {_show(key)} has no closing quote", raw)
            position += 1
            value = "".join(chars)
        else:
            end = position
            while end < length and text[end] not in ", \t":
                end += 1
            value, position = text[position:end], end
        pairs.append((key, value))


def parse_geoloc_profile_vars(location_info: str, format: str, method: str) -> Location:
    """Parse what ARI returns for GEOLOC_PROFILE(location_info), (format) and (method)."""
    raw = f"format={format} method={method} location_info={location_info}"
    if len(raw) > MAX_VARS_CHARS:
        _fail(f"geolocation variables have {len(raw)} characters; limit {MAX_VARS_CHARS}", raw)
    warnings: list[str] = []
    kind = format.strip().lower()
    pairs = _split_vars(location_info, raw)
    if not pairs:
        _fail("location_info is empty", raw)
    mapped_method = method_from_token(method, warnings)
    if kind == "civicaddress":
        civic: dict[str, str] = {}
        for key, value in pairs:
            _add_civic(civic, key, value.strip(), raw)
        return Location(
            source="pidf", raw=raw, civic=_checked_civic(civic, raw), method=mapped_method,
            warnings=tuple(warnings),
        )
    if kind == "uri":
        _fail("location by reference (format URI) is not fetched; ask the carrier for a value", raw)
    if kind != "gml":
        _fail(f"format must be GML, civicAddress or URI, got {_show(format)}", raw)
    reduced = _reduce(_shape_from_vars(pairs, raw), warnings)
    return Location(
        source="pidf",
        raw=raw,
        latitude=reduced.latitude,
        longitude=reduced.longitude,
        radius_m=reduced.radius_m,
        altitude_m=reduced.altitude_m,
        method=mapped_method,
        warnings=tuple(warnings),
    )


def _shape_from_vars(pairs: list[tuple[str, str]], raw: str) -> _Shape:
    values: dict[str, str] = {}
    positions: list[str] = []
    for key, value in pairs:
        if key not in _GML_KEYS:
            _fail(f"unknown location_info key {_show(key)}", raw)
        if key in ("pos", "pos3d"):
            positions.append(value)
        elif key in values:
            _fail(f"duplicate location_info key {_show(key)}", raw)
        else:
            values[key] = value
    shape_name = values.get("shape")
    if shape_name is None:
        _fail("location_info has no shape", raw)
    kind = _SHAPES.get(shape_name.lower())
    if kind is None:
        _fail(f"unsupported shape {_show(shape_name)}", raw)
    crs = values.get("crs", "").lower()
    if crs not in ("", "2d", "3d"):
        _fail(f"crs must be 2d or 3d, got {_show(values['crs'])}", raw)
    dimensions = {"": None, "2d": 2, "3d": 3}[crs]
    many = kind in ("Polygon", "Prism")
    if not positions:
        _fail(f"{kind} has no pos", raw)
    if not many and len(positions) > 1:
        _fail(f"{kind} has {len(positions)} positions; expected 1", raw)
    points = [_position(text, dimensions, f"{kind} pos", raw) for text in positions]
    if many and len(points) < 3:
        _fail(f"{kind} needs at least 3 vertices, got {len(points)}", raw)

    def distance(name: str) -> float:
        if name not in values:
            _fail(f"{kind} has no {name}", raw)
        return _distance(values[name], f"{kind} {name}", raw)

    if kind in ("Circle", "Sphere"):
        return _Shape(kind, points, radius=distance("radius"))
    if kind in ("Ellipse", "Ellipsoid"):
        return _Shape(kind, points, semi_major=distance("semiMajorAxis"))
    if kind == "ArcBand":
        return _Shape(kind, points, outer_radius=distance("outerRadius"))
    return _Shape(kind, points)
