class_name RLAccess
extends RefCounted
## Which requests the server answers at all: none from web pages, none by DNS rebinding.
##
## The rules of spacetime_rl/protocol/access.py (tests/unit/test_gdscript.py compares the
## constants): a Host that is not a loopback name or address (nor an allowed one) gets 403, any
## Origin header that is not allowed gets 403, a body that is not JSON gets 415. Checked before
## the token, on every path. Header names are lower case.

const LOOPBACK_NAMES := ["localhost", "localhost.localdomain"]
const BODY_TYPES := ["application/json", "application/octet-stream"]
const ANY_HOST := "*"


## The host of a Host header value, without its port and brackets, lower case.
static func host_name(host_header: String) -> String:
	var value := host_header.strip_edges().to_lower()
	if value.begins_with("["):
		var end := value.find("]")
		return value.substr(1, end - 1) if end > 0 else value
	if value.count(":") == 1:
		value = value.get_slice(":", 0)
	return value.trim_suffix(".")


static func is_loopback(host: String) -> bool:
	if host in LOOPBACK_NAMES or host.ends_with(".localhost"):
		return true
	if host == "::1" or host == "0:0:0:0:0:0:0:1":
		return true
	return host.begins_with("127.") and host.is_valid_ip_address()


## [status, message] when the request must be refused before it is served, else [].
static func refusal(
	headers: Dictionary,
	has_body: bool,
	allowed_hosts: PackedStringArray,
	allowed_origins: PackedStringArray
) -> Array:
	if headers.has("host"):
		var name := host_name(str(headers["host"]))
		if not (is_loopback(name) or name in allowed_hosts or ANY_HOST in allowed_hosts):
			var fix := "allow the name with --rl-allowed-host if clients use it"
			return [403, "Host %s is not this machine (DNS rebinding); %s" % [name.c_escape(), fix]]
	if headers.has("origin") and str(headers["origin"]) not in allowed_origins:
		var fix := "allow an origin with --rl-allowed-origin"
		var origin := str(headers["origin"]).c_escape().left(80)
		return [403, "requests from web pages (Origin %s) are refused; %s" % [origin, fix]]
	var media_type := (
		str(headers.get("content-type", "")).get_slice(";", 0).strip_edges().to_lower()
	)
	if has_body and media_type not in BODY_TYPES:
		var fix := "send the JSON body with Content-Type: application/json"
		return [415, "a request body must be JSON, not '%s'; %s" % [media_type.c_escape(), fix]]
	return []


## Tokens travel in a header: visible ASCII, no spaces (a non-ASCII one could never match).
static func is_valid_token(token: String) -> bool:
	if token.is_empty() or token.length() > 256:
		return false
	for i in token.length():
		var code := token.unicode_at(i)
		if code <= 32 or code >= 127:
			return false
	return true
