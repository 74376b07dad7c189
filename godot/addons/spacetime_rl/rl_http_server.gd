class_name RLHttpServer
extends RefCounted
## HTTP/1.1 over TCPServer with keep-alive and several connections, driven by `poll()` every frame.
##
## Transport only: it frames each request (request line, headers, a Content-Length body) and hands
## it to `handler.call(method, path, headers, body)`, which returns
## `[status: int, body: PackedByteArray, content_type: String]`, or a Pending that finishes with it
## later (the connection answers nothing else meanwhile). Header names reach the handler in lower
## case. What is wrong with the HTTP itself is answered here with the protocol's JSON error body:
## 400 (bad request line or headers, a NUL byte in them), 408 (too slow), 411 (chunked body), 503
## (every connection slot taken). A body over `max_body_bytes` is read and dropped, then the handler
## gets the request with an empty body and answers it (401 or 413, from the Content-Length header);
## the connection closes after that answer.
##
## Floods and slow clients. One poll() answers at most one request per connection and
## REQUESTS_PER_POLL in all, and reads at most READ_CHUNK_BYTES per connection and
## READ_BYTES_PER_POLL in all, starting with another connection each time, so no client stalls the
## frame. Buffers are bounded: the inbox by the body limit plus two heads; a connection whose client
## leaves more than OUTBOX_HIGH_WATER_BYTES of answers unread is neither read nor answered until it
## reads them, and is closed when it reads nothing for SEND_STALL_MS. Only a request in progress is
## on a clock: its line and headers must arrive within HEAD_DEADLINE_MS of its first byte (of the
## accept, on a new connection), its body within REQUEST_DEADLINE_MS, else 408 and close. A
## kept-alive connection between requests may stay silent for IDLE_TIMEOUT_MS (the trainer says
## nothing through minutes of PPO updates); when all MAX_CONNECTIONS slots are taken a newcomer gets
## 503. The embedded simulator keeps the same limits (spacetime_rl/protocol/wire.py).

const MAX_HEAD_BYTES := 16384
const READ_CHUNK_BYTES := 65536
const READ_BYTES_PER_POLL := 1048576
const REQUESTS_PER_POLL := 16
const OUTBOX_HIGH_WATER_BYTES := 262144
const HEAD_DEADLINE_MS := 10000
const REQUEST_DEADLINE_MS := 60000
const SEND_STALL_MS := 60000
const IDLE_TIMEOUT_MS := 3600000
const MAX_CONNECTIONS := 64
## Connections past MAX_CONNECTIONS kept only to send their 503; beyond these they are dropped.
const MAX_REFUSED := 16
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
	408: "Request Timeout",
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
var _refused: Array[Connection] = []
## Index of the connection served first by the next poll().
var _rotation := 0
## Bytes poll() may still read in this call.
var _read_budget := 0


## An answer the handler gives later (RLApi's /scene/load, once the scene settled): the connection
## waits for `finish([status, body, content_type])`; only the first call counts.
class Pending:
	signal finished

	var answer: Array = []

	func finish(value: Array) -> void:
		if answer.is_empty():
			answer = value
			finished.emit()

	func is_finished() -> bool:
		return not answer.is_empty()


## One client socket, what is buffered in each direction and where its request stands.
class Connection:
	var peer: StreamPeerTCP
	var inbox := PackedByteArray()
	## Bytes of the inbox already searched for the end of the head.
	var scanned := 0
	## The parsed head of the request whose body is awaited; empty until its head is complete.
	var head := {}
	var outbox := PackedByteArray()
	var close_after_send := false
	var discard_left := 0
	var oversized_head := {}
	var pending: Pending
	var pending_close := false
	var answered := 0
	## When the request in progress sent its first byte (the accept, for a new connection); -1
	## between requests.
	var request_started_ms := 0
	var last_active_ms := 0
	## When the outbox last became non-empty or drained some bytes.
	var outbox_moved_ms := 0

	func _init(stream: StreamPeerTCP) -> void:
		peer = stream
		peer.set_no_delay(true)
		last_active_ms = Time.get_ticks_msec()
		request_started_ms = last_active_ms

	func is_idle() -> bool:
		return (
			request_started_ms < 0
			and pending == null
			and outbox.is_empty()
			and not close_after_send
		)


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
	for connection in _connections + _refused:
		connection.peer.disconnect_from_host()
	_connections.clear()
	_refused.clear()
	_server.stop()


## Accepts, reads, answers and writes what is ready, within the per-poll bounds; never blocks.
## Returns the number of requests answered.
func poll() -> int:
	_accept()
	_read_budget = READ_BYTES_PER_POLL
	var answered := 0
	var count := _connections.size()
	var closed := {}
	for k in count:
		var connection := _connections[(_rotation + k) % count]
		var before := connection.answered
		if not _service(connection, answered < REQUESTS_PER_POLL):
			connection.peer.disconnect_from_host()
			closed[connection] = true
		answered += connection.answered - before
	_rotation = (_rotation + 1) % maxi(count, 1)
	if not closed.is_empty():
		var open: Array[Connection] = []
		for connection in _connections:
			if not closed.has(connection):
				open.append(connection)
		_connections = open
	var refusing: Array[Connection] = []
	for connection in _refused:
		if _service_refused(connection):
			refusing.append(connection)
		else:
			connection.peer.disconnect_from_host()
	_refused = refusing
	return answered


func _accept() -> void:
	while _server.is_connection_available():
		var connection := Connection.new(_server.take_connection())
		if _connections.size() < MAX_CONNECTIONS:
			_connections.append(connection)
		elif _refused.size() < MAX_REFUSED:
			var message := "all %d connections are busy; retry in a moment" % MAX_CONNECTIONS
			_queue_response(connection, 503, _error_body(message), JSON_TYPE, true)
			_refused.append(connection)
		else:
			connection.peer.disconnect_from_host()


## Returns false once the connection should be dropped.
func _service(connection: Connection, may_answer: bool) -> bool:
	var peer := connection.peer
	peer.poll()
	if peer.get_status() != StreamPeerTCP.STATUS_CONNECTED:
		return false
	var now := Time.get_ticks_msec()
	var backed_up := connection.outbox.size() >= OUTBOX_HIGH_WATER_BYTES
	if not backed_up:
		_receive(connection, now)
	if connection.discard_left > 0:
		var dropped := mini(connection.discard_left, connection.inbox.size())
		connection.inbox = connection.inbox.slice(dropped)
		connection.discard_left -= dropped
		if connection.discard_left == 0:
			_answer(connection, connection.oversized_head, PackedByteArray(), true)
	if connection.pending != null and connection.pending.is_finished():
		var pending := connection.pending
		connection.pending = null
		if not connection.inbox.is_empty():
			connection.request_started_ms = now
		_queue_answer(connection, pending.answer, "a deferred answer", connection.pending_close)
	var busy := connection.pending != null or connection.close_after_send
	if not busy and connection.discard_left == 0:
		_read_head(connection)
		if may_answer and not backed_up and not connection.close_after_send:
			_answer_complete_request(connection)
	var overdue := _overdue(connection, now)
	if not overdue.is_empty():
		_queue_error(connection, 408, overdue, true)
	_send(connection, now)
	if not connection.outbox.is_empty():
		return now - connection.outbox_moved_ms <= SEND_STALL_MS
	if connection.close_after_send:
		return false
	return not (connection.is_idle() and now - connection.last_active_ms > IDLE_TIMEOUT_MS)


## A connection past MAX_CONNECTIONS: sends its 503, drops what it sends; false once done.
func _service_refused(connection: Connection) -> bool:
	var peer := connection.peer
	peer.poll()
	if peer.get_status() != StreamPeerTCP.STATUS_CONNECTED:
		return false
	var now := Time.get_ticks_msec()
	var available := mini(peer.get_available_bytes(), READ_CHUNK_BYTES)
	if available > 0:
		peer.get_partial_data(available)
	_send(connection, now)
	return not connection.outbox.is_empty() and now - connection.outbox_moved_ms <= HEAD_DEADLINE_MS


func _receive(connection: Connection, now: int) -> void:
	var room := max_body_bytes + 2 * MAX_HEAD_BYTES - connection.inbox.size()
	if connection.discard_left > 0:
		room = READ_CHUNK_BYTES
	var wanted := mini(connection.peer.get_available_bytes(), mini(room, READ_CHUNK_BYTES))
	wanted = mini(wanted, _read_budget)
	if wanted <= 0:
		return
	var got: Array = connection.peer.get_partial_data(wanted)
	var data: PackedByteArray = got[1]
	if got[0] != OK or data.is_empty():
		return
	_read_budget -= data.size()
	connection.inbox.append_array(data)
	connection.last_active_ms = now
	if connection.request_started_ms < 0:
		connection.request_started_ms = now


func _send(connection: Connection, now: int) -> void:
	if connection.outbox.is_empty():
		return
	var result: Array = connection.peer.put_partial_data(connection.outbox)
	if result[0] == OK:
		var sent: int = result[1]
		if sent > 0:
			connection.outbox = connection.outbox.slice(sent)
			connection.last_active_ms = now
			connection.outbox_moved_ms = now
	else:
		connection.outbox.clear()
		connection.close_after_send = true


## Why the request in progress has taken too long, or "" (an answer the handler owes is not the
## client's delay).
static func _overdue(connection: Connection, now: int) -> String:
	if connection.request_started_ms < 0 or connection.pending != null:
		return ""
	if connection.close_after_send:
		return ""
	var waited := now - connection.request_started_ms
	var reading_head := connection.head.is_empty() and connection.discard_left == 0
	if reading_head and waited > HEAD_DEADLINE_MS:
		return (
			"the request line and headers did not arrive within %d s of the request's first byte"
			% (HEAD_DEADLINE_MS / 1000)
		)
	if waited > REQUEST_DEADLINE_MS:
		return (
			"the request did not arrive within %d s of its first byte"
			% (REQUEST_DEADLINE_MS / 1000)
		)
	return ""


## Parses the head of the request in progress once it is complete (into connection.head); answers
## what is wrong with it, and starts dropping a body over the limit.
func _read_head(connection: Connection) -> void:
	if not connection.head.is_empty() or connection.inbox.is_empty():
		return
	var head_end := _find_head_end(connection)
	if head_end < 0:
		if connection.inbox.size() > MAX_HEAD_BYTES:
			var message := "the request line and headers exceed %d bytes" % MAX_HEAD_BYTES
			_queue_error(connection, 400, message, true)
		return
	var head_bytes := connection.inbox.slice(0, head_end)
	if head_bytes.has(0):
		_queue_error(connection, 400, "the request line or headers contain a NUL byte", true)
		return
	var head := _parse_head(head_bytes.get_string_from_ascii())
	if head.has("error"):
		_queue_error(connection, head["status"], head["error"], true)
		return
	connection.inbox = connection.inbox.slice(head_end + 4)
	connection.scanned = 0
	var length: int = head["content_length"]
	var headers: Dictionary = head["headers"]
	var expects_continue: bool = headers.get("expect", "").to_lower() == "100-continue"
	if length > max_body_bytes:
		if expects_continue or length > DISCARD_FACTOR * max_body_bytes:
			_answer(connection, head, PackedByteArray(), true)
		else:
			connection.discard_left = length
			connection.oversized_head = head
		return
	connection.head = head
	if expects_continue and connection.inbox.size() < length:
		connection.outbox.append_array("HTTP/1.1 100 Continue\r\n\r\n".to_ascii_buffer())


## Answers the request in progress once its whole body is in.
func _answer_complete_request(connection: Connection) -> void:
	if connection.head.is_empty():
		return
	var head := connection.head
	var length: int = head["content_length"]
	if connection.inbox.size() < length:
		return
	var body := connection.inbox.slice(0, length)
	connection.inbox = connection.inbox.slice(length)
	connection.head = {}
	_answer(connection, head, body, not head["keep_alive"])


func _answer(connection: Connection, head: Dictionary, body: PackedByteArray, close: bool) -> void:
	var result: Variant = handler.call(head["method"], head["path"], head["headers"], body)
	connection.request_started_ms = -1 if connection.inbox.is_empty() else Time.get_ticks_msec()
	if result is Pending:
		connection.pending = result
		connection.pending_close = close
		return
	_queue_answer(connection, result, "%s %s" % [head["method"], head["path"]], close)


## Queues the handler's answer, or a 500 when it is not [status, body, content_type].
func _queue_answer(connection: Connection, result: Variant, what: String, close: bool) -> void:
	if typeof(result) != TYPE_ARRAY or (result as Array).size() != 3:
		var message := "the server failed on %s; see the Godot output" % what
		result = [500, _error_body(message), JSON_TYPE]
	_queue_response(connection, result[0], result[1], result[2], close)
	connection.answered += 1


## Index of the blank line ending the head ("\r\n\r\n") in the inbox, or -1. Each call searches
## only what arrived since the last one, so a head trickling in byte by byte costs linear time.
static func _find_head_end(connection: Connection) -> int:
	var inbox := connection.inbox
	var limit := mini(inbox.size(), MAX_HEAD_BYTES + 4)
	var at := inbox.find(13, maxi(connection.scanned - 3, 0))
	while at >= 0 and at + 3 < limit:
		if inbox[at + 1] == 10 and inbox[at + 2] == 13 and inbox[at + 3] == 10:
			return at
		at = inbox.find(13, at + 1)
	connection.scanned = limit
	return -1


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
	connection.head = {}
	connection.request_started_ms = -1
	_queue_response(connection, status, _error_body(message), JSON_TYPE, close)


func _queue_response(
	connection: Connection, status: int, body: PackedByteArray, content_type: String, close: bool
) -> void:
	if connection.outbox.is_empty():
		connection.outbox_moved_ms = Time.get_ticks_msec()
	var head := "HTTP/1.1 %d %s\r\n" % [status, REASONS.get(status, "Status")]
	head += "Content-Type: %s\r\nContent-Length: %d\r\n" % [content_type, body.size()]
	head += "Connection: %s\r\n\r\n" % ("close" if close else "keep-alive")
	connection.outbox.append_array(head.to_ascii_buffer())
	connection.outbox.append_array(body)
	connection.close_after_send = connection.close_after_send or close


static func _error_body(message: String) -> PackedByteArray:
	return JSON.stringify({"error": message}).to_utf8_buffer()
