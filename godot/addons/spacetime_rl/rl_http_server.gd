class_name RLHttpServer
extends RefCounted
## HTTP/1.1 over TCPServer with keep-alive and several connections, driven by `poll()` every frame.
##
## Transport only: it frames each request (request line, headers, a Content-Length body) and hands
## it to `handler.call(method, path, headers, body)`, which returns
## `[status: int, body: PackedByteArray, content_type: String]`. Header names reach the handler in
## lower case. What is wrong with the HTTP itself is answered here with the protocol's JSON error
## body: 400 (bad request line or headers), 411 (chunked body). A body over `max_body_bytes` is
## read and dropped, then the handler gets the request with an empty body and answers it (401 or
## 413, from the Content-Length header); the connection closes after that answer.

const MAX_HEAD_BYTES := 16384
const READ_CHUNK_BYTES := 65536
const IDLE_TIMEOUT_MS := 300000
const MAX_CONNECTIONS := 64
## An oversized body is read and dropped (up to this many times the limit) before the 413 goes out,
## so the client is not reset while it is still sending.
const DISCARD_FACTOR := 16
const REASONS := {
	100: "Continue",
	200: "OK",
	400: "Bad Request",
	401: "Unauthorized",
	403: "Forbidden",
	404: "Not Found",
	405: "Method Not Allowed",
	409: "Conflict",
	411: "Length Required",
	413: "Content Too Large",
	500: "Internal Server Error",
	503: "Service Unavailable",
}
const JSON_TYPE := "application/json"

var handler: Callable
var max_body_bytes: int
var _server := TCPServer.new()
var _connections: Array[Connection] = []


## One client socket and what is buffered in each direction.
class Connection:
	var peer: StreamPeerTCP
	var inbox := PackedByteArray()
	var outbox := PackedByteArray()
	var close_after_send := false
	var continue_sent := false
	var discard_left := 0
	var oversized_head := {}
	var answered := 0
	var last_active_ms := 0

	func _init(stream: StreamPeerTCP) -> void:
		peer = stream
		peer.set_no_delay(true)
		last_active_ms = Time.get_ticks_msec()


func _init(request_handler: Callable, body_limit: int) -> void:
	handler = request_handler
	max_body_bytes = body_limit


## Starts listening; returns the Error from TCPServer.listen.
func listen(port: int, host: String) -> Error:
	return _server.listen(port, host)


## The bound port (the OS's choice when listen() was given port 0).
func get_port() -> int:
	return _server.get_local_port()


func stop() -> void:
	for connection in _connections:
		connection.peer.disconnect_from_host()
	_connections.clear()
	_server.stop()


## Accepts, reads, answers and writes whatever is ready; never blocks. Returns the number of
## requests answered.
func poll() -> int:
	while _server.is_connection_available():
		var stream := _server.take_connection()
		if _connections.size() >= MAX_CONNECTIONS:
			stream.disconnect_from_host()
			continue
		_connections.append(Connection.new(stream))
	var answered := 0
	var open: Array[Connection] = []
	for connection in _connections:
		var before := connection.answered
		if _service(connection):
			open.append(connection)
		else:
			connection.peer.disconnect_from_host()
		answered += connection.answered - before
	_connections = open
	return answered


## Returns false once the connection should be dropped.
func _service(connection: Connection) -> bool:
	var peer := connection.peer
	peer.poll()
	if peer.get_status() != StreamPeerTCP.STATUS_CONNECTED:
		return false
	_receive(connection)
	if connection.discard_left > 0:
		var dropped := mini(connection.discard_left, connection.inbox.size())
		connection.inbox = connection.inbox.slice(dropped)
		connection.discard_left -= dropped
		if connection.discard_left == 0:
			_answer(connection, connection.oversized_head, PackedByteArray(), true)
	while connection.discard_left == 0 and not connection.close_after_send:
		if not _answer_next_request(connection):
			break
	_send(connection)
	if connection.outbox.is_empty():
		if connection.close_after_send:
			return false
		if Time.get_ticks_msec() - connection.last_active_ms > IDLE_TIMEOUT_MS:
			return false
	return true


func _receive(connection: Connection) -> void:
	var room := max_body_bytes + 2 * MAX_HEAD_BYTES - connection.inbox.size()
	if connection.discard_left > 0:
		room = READ_CHUNK_BYTES
	var available := connection.peer.get_available_bytes()
	if available <= 0 or room <= 0:
		return
	var got: Array = connection.peer.get_partial_data(mini(available, mini(room, READ_CHUNK_BYTES)))
	if got[0] == OK:
		var data: PackedByteArray = got[1]
		connection.inbox.append_array(data)
		connection.last_active_ms = Time.get_ticks_msec()


func _send(connection: Connection) -> void:
	if connection.outbox.is_empty():
		return
	var result: Array = connection.peer.put_partial_data(connection.outbox)
	if result[0] == OK:
		var sent: int = result[1]
		connection.outbox = connection.outbox.slice(sent)
		connection.last_active_ms = Time.get_ticks_msec()
	else:
		connection.outbox.clear()
		connection.close_after_send = true


## Answers one complete request from the inbox; false when more bytes are needed first.
func _answer_next_request(connection: Connection) -> bool:
	var head_end := _find_head_end(connection.inbox)
	if head_end < 0:
		if connection.inbox.size() > MAX_HEAD_BYTES:
			var message := "the request line and headers exceed %d bytes" % MAX_HEAD_BYTES
			_queue_error(connection, 400, message, true)
		return false
	var head := _parse_head(connection.inbox.slice(0, head_end).get_string_from_ascii())
	if head.has("error"):
		_queue_error(connection, head["status"], head["error"], true)
		return false
	var headers: Dictionary = head["headers"]
	var length: int = head["content_length"]
	var body_start := head_end + 4
	if length > max_body_bytes:
		connection.inbox = connection.inbox.slice(body_start)
		var expects_continue: bool = headers.get("expect", "").to_lower() == "100-continue"
		if expects_continue or length > DISCARD_FACTOR * max_body_bytes:
			_answer(connection, head, PackedByteArray(), true)
		else:
			connection.discard_left = length
			connection.oversized_head = head
		return false
	if connection.inbox.size() < body_start + length:
		if headers.get("expect", "").to_lower() == "100-continue" and not connection.continue_sent:
			connection.outbox.append_array("HTTP/1.1 100 Continue\r\n\r\n".to_ascii_buffer())
			connection.continue_sent = true
		return false
	var body := connection.inbox.slice(body_start, body_start + length)
	connection.inbox = connection.inbox.slice(body_start + length)
	connection.continue_sent = false
	_answer(connection, head, body, not head["keep_alive"])
	return true


func _answer(connection: Connection, head: Dictionary, body: PackedByteArray, close: bool) -> void:
	var result: Variant = handler.call(head["method"], head["path"], head["headers"], body)
	if typeof(result) != TYPE_ARRAY or (result as Array).size() != 3:
		var message := (
			"the server failed on %s %s; see the Godot output" % [head["method"], head["path"]]
		)
		result = [500, _error_body(message), JSON_TYPE]
	_queue_response(connection, result[0], result[1], result[2], close)
	connection.answered += 1


## Index of the blank line ending the head ("\r\n\r\n"), or -1.
static func _find_head_end(inbox: PackedByteArray) -> int:
	var window := inbox.slice(0, mini(inbox.size(), MAX_HEAD_BYTES + 4))
	return window.get_string_from_ascii().find("\r\n\r\n")


## {method, path, headers, content_length, keep_alive} or {status, error}.
static func _parse_head(text: String) -> Dictionary:
	var lines := text.split("\r\n")
	var request_line := lines[0].split(" ")
	if request_line.size() != 3 or not request_line[2].begins_with("HTTP/1."):
		return {"status": 400, "error": "malformed request line %s" % lines[0].c_escape().left(80)}
	var headers := {}
	for i in range(1, lines.size()):
		var colon := lines[i].find(":")
		if colon <= 0:
			return {
				"status": 400, "error": "malformed header line %s" % lines[i].c_escape().left(80)
			}
		var name := lines[i].left(colon).strip_edges().to_lower()
		var value := lines[i].substr(colon + 1).strip_edges()
		if headers.has(name) and name == "content-length" and headers[name] != value:
			return {"status": 400, "error": "conflicting Content-Length headers"}
		headers[name] = value
	if headers.has("transfer-encoding"):
		var fix := "send the body with a Content-Length header"
		return {"status": 411, "error": "Transfer-Encoding is not supported; " + fix}
	var length_text: String = headers.get("content-length", "0")
	if length_text.is_empty() or length_text.length() > 15 or not _is_digits(length_text):
		return {
			"status": 400, "error": "Content-Length %s is not a byte count" % length_text.left(20)
		}
	var connection_header: String = headers.get("connection", "").to_lower()
	var keep_alive := connection_header != "close"
	if request_line[2] == "HTTP/1.0":
		keep_alive = connection_header == "keep-alive"
	return {
		"method": request_line[0],
		"path": request_line[1].split("?")[0],
		"headers": headers,
		"content_length": length_text.to_int(),
		"keep_alive": keep_alive,
	}


static func _is_digits(text: String) -> bool:
	for character in text:
		if character < "0" or character > "9":
			return false
	return true


func _queue_error(connection: Connection, status: int, message: String, close: bool) -> void:
	connection.inbox.clear()
	_queue_response(connection, status, _error_body(message), JSON_TYPE, close)


func _queue_response(
	connection: Connection, status: int, body: PackedByteArray, content_type: String, close: bool
) -> void:
	var head := "HTTP/1.1 %d %s\r\n" % [status, REASONS.get(status, "Status")]
	head += "Content-Type: %s\r\nContent-Length: %d\r\n" % [content_type, body.size()]
	head += "Connection: %s\r\n\r\n" % ("close" if close else "keep-alive")
	connection.outbox.append_array(head.to_ascii_buffer())
	connection.outbox.append_array(body)
	connection.close_after_send = connection.close_after_send or close


static func _error_body(message: String) -> PackedByteArray:
	return JSON.stringify({"error": message}).to_utf8_buffer()
