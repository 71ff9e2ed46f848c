"""The OpenAPI 3.0 document served at /api/v1/openapi.json."""

from __future__ import annotations

from typing import Any


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _op(summary: str, ok: str, ok_schema: dict[str, Any], *, body: dict[str, Any] | None = None,
        public: bool = False, errors: tuple[str, ...] = ("401", "403", "404", "422")) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary,
                          "responses": {ok: {"description": "OK", **_json(ok_schema)}}}
    for code in errors:
        op["responses"][code] = {"description": "error", **_json(_ref("Error"))}
    if body is not None:
        op["requestBody"] = {"required": True, **_json(body)}
        op["responses"]["413"] = {"description": "body over the size limit", **_json(_ref("Error"))}
    if public:
        op["security"] = []
    return op


REF_PARAM = {"name": "ref", "in": "path", "required": True, "schema": {"type": "string"}}


def _also_ok(op: dict[str, Any], code: str, description: str) -> dict[str, Any]:
    op["responses"][code] = {"description": description,
                             **_json({"type": "object"})}
    return op


def openapi_document(categories: list[str]) -> dict[str, Any]:
    props: dict[str, Any] = {
        k: {"type": "string", "nullable": True} for k in (
            "reference", "status", "kind", "category", "caller_number", "operator", "agency",
            "menu_choice", "arrived_at", "operator_answered_at", "ended_at", "notes")}
    props["priority"] = {"type": "integer"}
    props["silent"] = {"type": "boolean"}
    ticket = {"type": "object", "properties": props}
    return {
        "openapi": "3.0.3",
        "info": {"title": "Siaga 112 API", "version": "1"},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"session": []}],
        "paths": {
            "/api/v1/tickets": {"get": {
                **_op("Recent tickets", "200", {"type": "object", "properties": {
                    "tickets": {"type": "array", "items": _ref("Ticket")}}}, errors=("401", "422")),
                "parameters": [{"name": "status", "in": "query", "schema": {"type": "string"}},
                               {"name": "limit", "in": "query",
                                "schema": {"type": "integer", "minimum": 1, "maximum": 500}}]}},
            "/api/v1/tickets/{ref}": {"get": {
                **_op("One ticket with audit, locations, notifications, earlier tickets", "200",
                      _ref("Ticket"), errors=("401", "404")), "parameters": [REF_PARAM]}},
            "/api/v1/tickets/{ref}/classify": {"post": {
                **_op("Classify: category, kind, notes, or mark prank/ghost/duplicate", "200",
                      {"type": "object"}, body=_ref("Classify")), "parameters": [REF_PARAM]}},
            "/api/v1/tickets/{ref}/dispatch": {"post": {
                **_op("Dispatch to agencies (writes the notification outbox)", "201",
                      {"type": "object"}, body=_ref("Dispatch"),
                      errors=("401", "403", "404", "409", "422")), "parameters": [REF_PARAM]}},
            "/api/v1/complaints": {"post": _op(
                "Open a complaint ticket (API: bearer token; browsers: the public form)", "201",
                {"type": "object", "properties": {"reference": {"type": "string"}}},
                body=_ref("Complaint"), errors=("400", "401", "403", "422", "429"))},
            "/api/v1/whatsapp": {"post": {**_also_ok(_op(
                "WhatsApp Cloud API webhook: one complaint per text message; the sender is proven "
                "by X-Hub-Signature-256 (HMAC-SHA256 of the body with the app secret)",
                "201", {"type": "object", "properties": {"references": {
                    "type": "array", "items": {"type": "string"}}}},
                body={"type": "object", "required": ["entry"],
                      "properties": {"entry": {"type": "array", "items": {"type": "object"}}}},
                public=True, errors=("401", "403", "422", "429", "503")), "200",
                "no text message in it: nothing made"),
                "parameters": [{"name": "X-Hub-Signature-256", "in": "header", "required": True,
                                "schema": {"type": "string"}}]},
                "get": {"summary": "Meta's subscription handshake (hub.verify_token)",
                        "security": [], "responses": {
                            "200": {"description": "hub.challenge echoed",
                                    "content": {"text/plain": {"schema": {"type": "string"}}}},
                            "403": {"description": "error", **_json(_ref("Error"))},
                            "422": {"description": "error", **_json(_ref("Error"))}},
                        "parameters": [{"name": n, "in": "query", "schema": {"type": "string"}}
                                       for n in ("hub.mode", "hub.verify_token",
                                                 "hub.challenge")]}},
            "/api/v1/calls/{call}/agency": {"post": {
                **_op("Conference an agency number into a live call through the trunk", "202",
                      {"type": "object"},
                      body={"type": "object", "required": ["number"],
                            "properties": {"number": {"type": "string"}}},
                      errors=("401", "403", "404", "409", "422", "502")),
                "parameters": [{"name": "call", "in": "path", "required": True,
                                "schema": {"type": "string"}}]}},
            "/api/v1/agencies": {"get": _op("Agencies of this site", "200", {"type": "object"},
                                            errors=("401",))},
            "/api/v1/ack/{token}": {"post": {
                **_op("Agency acknowledges or resolves (the signed token is the credential)", "200",
                      {"type": "object"}, body=_ref("Ack"), public=True,
                      errors=("403", "404", "409", "422")),
                "parameters": [{"name": "token", "in": "path", "required": True,
                                "schema": {"type": "string"}}]}},
            "/api/v1/notifications/{id}/retry": {"post": {
                **_op("Send a failed notification again (supervisor)", "200", {"type": "object"},
                      errors=("401", "403", "404", "409")),
                "parameters": [{"name": "id", "in": "path", "required": True,
                                "schema": {"type": "integer", "minimum": 1,
                                           "maximum": 2**31 - 1}}]}},
            "/api/v1/login-locks": {"get": _op(
                "User names and addresses with failed logins or a lock (admin)", "200",
                {"type": "object", "properties": {"locks": {"type": "array", "items": {
                    "type": "object"}}}}, errors=("401", "403"))},
            "/api/v1/login-locks/clear": {"post": _op(
                "Clear a user name's or an address's failed logins and lock (admin, audited)",
                "200", {"type": "object"},
                body={"type": "object", "additionalProperties": False, "required": ["kind", "key"],
                      "properties": {"kind": {"type": "string", "enum": ["user", "address"]},
                                     "key": {"type": "string", "minLength": 1,
                                             "maxLength": 128}}},
                errors=("401", "403", "404", "422"))},
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "siaga_session",
                            "description": "browser session; unsafe methods need X-CSRF-Token"},
            },
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {
                    "error": {"type": "string"},
                    "errors": {"type": "array", "items": {"type": "object", "properties": {
                        "field": {"type": "string"}, "message": {"type": "string"}}}}}},
                "Ticket": ticket,
                "Classify": {"type": "object", "additionalProperties": False, "properties": {
                    "category": {"type": "string", "enum": categories},
                    "kind": {"type": "string", "enum": ["emergency", "complaint", "information"]},
                    "notes": {"type": "string", "maxLength": 4000},
                    "status": {"type": "string", "enum": ["prank", "ghost", "duplicate"]}}},
                "Dispatch": {"type": "object", "additionalProperties": False,
                             "required": ["agencies"], "properties": {
                                 "agencies": {"type": "array", "minItems": 1,
                                              "items": {"type": "string"}}}},
                "Complaint": {"type": "object", "additionalProperties": False,
                              "required": ["description", "phone"], "properties": {
                                  "description": {"type": "string", "minLength": 10,
                                                  "maxLength": 2000},
                                  "phone": {"type": "string", "minLength": 6, "maxLength": 20,
                                            "pattern": r"^\+?[0-9][0-9 \-]{5,19}$"},
                                  "name": {"type": "string", "maxLength": 100},
                                  "category": {"type": "string",
                                               "enum": sorted({*categories, "complaint"})}}},
                "Ack": {"type": "object", "additionalProperties": False, "required": ["action"],
                        "properties": {
                            "action": {"type": "string", "enum": ["acknowledge", "resolve"]},
                            "evidence": {"type": "string", "maxLength": 4000},
                            "photo_url": {"type": "string", "format": "uri", "maxLength": 1000}}},
            },
        },
    }
