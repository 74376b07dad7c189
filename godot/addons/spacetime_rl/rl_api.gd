class_name RLApi
extends RefCounted
## Protocol v1 (docs/protocol.md) as one function: `handle(method, path, headers, body)`.
##
## Returns `[status: int, body: PackedByteArray, content_type: String]`, so any HTTP server can
## serve it: RLHttpServer here, or the project's own HTTP API on port 8080 (docs/godot.md). Only
## /scene/load answers later, once the new scene's physics settled: it returns an
## RLHttpServer.Pending then; `handle_async` awaits it for servers that can await.
## Every request is validated like the embedded simulator does; bad input is a 4xx with
## `{"error": "..."}`, never a crash. Header names must be lower case.

## path -> method -> [handler method name, statuses it answers]. tests/unit/test_gdscript.py
## compares this table with docs/openapi.yaml. Any path answers 401 first (but /health), an unknown
## path 404, a known path asked with another method 405.
const ROUTES := {
	"/health": {"GET": ["_health", [200]]},
	"/scene/load": {"POST": ["_scene_load", [200, 400, 401, 403, 404, 409, 413]]},
	"/scene/state": {"GET": ["_scene_state", [200, 401]]},
	"/performance": {"GET": ["_performance", [200, 401]]},
	"/rl/spec": {"GET": ["_rl_spec", [200, 401, 409]]},
	"/rl/reset": {"POST": ["_rl_reset", [200, 400, 401, 409, 413]]},
	"/rl/action": {"POST": ["_rl_action", [200, 400, 401, 409, 413]]},
	"/rl/observation": {"GET": ["_rl_observation", [200, 401, 409]]},
	"/rl/state": {"GET": ["_rl_state", [200, 401, 409]]},
	"/rl/step": {"POST": ["_rl_step", [200, 400, 401, 409, 413]]},
}
const OPEN_PATHS := ["/health"]
const JSON_TYPE := "application/json"
## The binary /rl/step answer (docs/protocol.md, "Binary step body"), copied from wire.py's
## STEP_BINARY_*; tests/unit/test_wire_binary.py checks them.
const STEP_BINARY_CONTENT_TYPE := "application/octet-stream"
const STEP_BINARY_MAGIC := "STRL"
const STEP_BINARY_VERSION := 1
const STEP_BINARY_HEADER_SIZE := 32
## Largest integer a JSON number (a double) carries exactly.
const MAX_EXACT_INTEGER := 9007199254740992.0

## The SpacetimeRL autoload (rl_service.gd): settings, scene loading and the RL environment.
var service: RLService


## `host` is the node whose server calls handle() (the project's own HTTP API), if not the
## autoload's: it is made PROCESS_MODE_ALWAYS, because RLEnvironment keeps the tree paused and a
## paused node's _process, where servers poll, would never answer again.
func _init(owner_service: RLService, host: Node = null) -> void:
	service = owner_service
	if host != null and host.process_mode != Node.PROCESS_MODE_ALWAYS:
		host.process_mode = Node.PROCESS_MODE_ALWAYS


## The answer `[status, body, content_type]`, or an RLHttpServer.Pending that finishes with it.
func handle(method: String, path: String, headers: Dictionary, body: PackedByteArray) -> Variant:
	var has_body := body.size() > 0 or str(headers.get("content-length", "0")).to_int() > 0
	var refused := RLAccess.refusal(
		headers, has_body, service.allowed_hosts, service.allowed_origins
	)
	if not refused.is_empty():
		return _error(refused[0], refused[1])
	if path not in OPEN_PATHS and not _authorized(headers):
		var fix := "send the --rl-token value (or SPACETIME_RL_TOKEN)"
		return _error(401, "missing or wrong 'Authorization: Bearer <token>' header; " + fix)
	if not ROUTES.has(path):
		return _error(404, "no endpoint %s; see docs/protocol.md for the list" % path.c_escape())
	var methods: Dictionary = ROUTES[path]
	if not methods.has(method):
		var allowed := " or ".join(methods.keys())
		return _error(405, "%s answers %s, not %s" % [path, allowed, method.c_escape()])
	var limit: int = service.max_body_bytes
	if body.size() > limit or str(headers.get("content-length", "0")).to_int() > limit:
		return _error(413, "the request body exceeds the limit of %d bytes; send less" % limit)
	var route: Array = methods[method]
	var handler: String = route[0]
	if handler == "_rl_step" and accepts_binary(str(headers.get("accept", ""))):
		handler = "_rl_step_binary"
	var answer: Variant = call(handler, body)
	if answer is RLHttpServer.Pending:
		return answer
	var response: Array = answer
	if response[0] not in route[1]:
		push_error("spacetime-rl: %s %s answered %d, not in ROUTES" % [method, path, response[0]])
	return response


## handle() for a server that can await: the answer, after the scene settled for /scene/load.
func handle_async(
	method: String, path: String, headers: Dictionary, body: PackedByteArray
) -> Array:
	var answer: Variant = handle(method, path, headers, body)
	if answer is RLHttpServer.Pending:
		var pending := answer as RLHttpServer.Pending
		if not pending.is_finished():
			await pending.finished
		return pending.answer
	return answer


# ---------------------------------------------------------------- engine endpoints


func _health(_body: PackedByteArray) -> Array:
	var version: String = Engine.get_version_info()["string"]
	return _ok({"status": "ok", "engine": "godot", "version": version})


func _scene_load(body: PackedByteArray) -> Variant:
	var parsed := _json_object(body)
	if parsed.has("error"):
		return _error(400, parsed["error"])
	var request: Dictionary = parsed["value"]
	if not request.has("scene"):
		return _error(400, "missing field 'scene'; send the res:// path of the scene to load")
	var scene: Variant = request["scene"]
	if typeof(scene) != TYPE_STRING:
		return _error(400, "'scene' is %s; expected a res:// path string" % _describe(scene))
	var problem := _scene_path_problem(scene)
	if not problem.is_empty():
		return _error(400, problem)
	if not service.is_whitelisted(scene):
		return _error(403, "scene %s is not in %s; add it there" % [scene, service.WHITELIST_PATH])
	if not ResourceLoader.exists(scene, "PackedScene"):
		return _error(404, "scene %s does not exist in this project" % scene)
	var loaded: Error = service.load_scene(scene)
	if loaded != OK:
		return _error(404, "scene %s could not be loaded (%s)" % [scene, error_string(loaded)])
	var environment: RLEnvironment = service.get_loaded_environment()
	var pending := RLHttpServer.Pending.new()
	environment.settled.connect(
		func() -> void: pending.finish(_scene_settled(scene, environment)), CONNECT_ONE_SHOT
	)
	environment.tree_exiting.connect(
		func() -> void:
			pending.finish(_error(409, "scene %s was replaced before it was ready" % scene)),
		CONNECT_ONE_SHOT
	)
	return pending


## /scene/load's answer once the scene settled: ready, or 409 with what keeps it from RL.
static func _scene_settled(scene: String, environment: RLEnvironment) -> Array:
	if not environment.problem.is_empty():
		return _error(409, environment.problem)
	return _ok({"scene": scene, "loaded": true})


func _scene_state(_body: PackedByteArray) -> Array:
	var environment: RLEnvironment = service.get_environment()
	return _ok(
		{
			"scene": service.get_scene_path(),
			"rl_ready": environment != null,
			"num_agents": environment.num_agents if environment != null else 0,
		}
	)


func _performance(_body: PackedByteArray) -> Array:
	# Release builds do not count static memory (the monitor reads 0): unknown, not zero.
	var static_memory: Variant = null
	if OS.is_debug_build():
		static_memory = int(Performance.get_monitor(Performance.MEMORY_STATIC))
	return _ok(
		{
			"engine":
			{
				"fps": Engine.get_frames_per_second(),
				"physics_fps": float(Engine.physics_ticks_per_second),
			},
			"memory": {"static_memory_usage": static_memory},
		}
	)


# ---------------------------------------------------------------- RL endpoints


func _rl_spec(_body: PackedByteArray) -> Array:
	var environment: RLEnvironment = service.get_environment()
	if environment == null:
		return _no_rl_scene()
	return _ok(
		{
			"protocol": RLProtocol.PROTOCOL_VERSION,
			"num_agents": environment.num_agents,
			"observation_size": RLProtocol.OBSERVATION_SIZE,
			"action_size": RLProtocol.ACTION_SIZE,
			"observation_fields": RLProtocol.observation_fields_json(),
			"physics_hz": RLProtocol.PHYSICS_HZ,
			"action_repeat": environment.action_repeat,
			"scenarios": environment.scenarios(),
		}
	)


func _rl_reset(body: PackedByteArray) -> Array:
	var environment: RLEnvironment = service.get_environment()
	if environment == null:
		return _no_rl_scene()
	var parsed := _json_object(body) if not body.is_empty() else {"value": {}}
	if parsed.has("error"):
		return _error(400, parsed["error"])
	var request: Dictionary = parsed["value"]
	var seed_value: Variant = request.get("seed")
	if seed_value != null:
		if not _is_integer(seed_value) or seed_value < 0 or seed_value > RLProtocol.MAX_SEED:
			var what := _describe(seed_value)
			return _error(
				400,
				(
					"'seed' is %s; expected an integer from 0 to %d or null"
					% [what, RLProtocol.MAX_SEED]
				)
			)
	var agents := _agent_indices(request.get("agents"), environment.num_agents)
	if agents.has("error"):
		return _error(400, agents["error"])
	var options: Variant = request.get("options", {})
	if options == null:
		options = {}
	if typeof(options) != TYPE_DICTIONARY:
		return _error(
			400, "'options' is %s; expected an object of reset options" % _describe(options)
		)
	var indices: Array[int] = agents["value"]
	var problem := environment.configure(indices, options)
	if not problem.is_empty():
		return _error(400, problem)
	var seed_int: Variant = null if seed_value == null else int(seed_value)
	var observations := environment.reset(indices, seed_int)
	return _ok(
		{"observations": observations, "ignored_options": environment.ignored_options(options)}
	)


func _rl_action(body: PackedByteArray) -> Array:
	var parsed := _step_request(body)
	if parsed.has("status"):
		return parsed["response"]
	var environment: RLEnvironment = service.get_environment()
	environment.step(parsed["actions"], false)
	return _ok({"tick": environment.tick})


func _rl_observation(_body: PackedByteArray) -> Array:
	var environment: RLEnvironment = service.get_environment()
	if environment == null:
		return _no_rl_scene()
	return _ok({"observations": environment.observations()})


func _rl_state(_body: PackedByteArray) -> Array:
	var environment: RLEnvironment = service.get_environment()
	if environment == null:
		return _no_rl_scene()
	return _ok(environment.state())


func _rl_step(body: PackedByteArray) -> Array:
	var parsed := _step_request(body)
	if parsed.has("status"):
		return parsed["response"]
	var environment: RLEnvironment = service.get_environment()
	return _ok(environment.step(parsed["actions"], parsed["auto_reset"]))


## /rl/step for a client whose Accept header asks for the binary body; errors stay JSON.
func _rl_step_binary(body: PackedByteArray) -> Array:
	var parsed := _step_request(body)
	if parsed.has("status"):
		return parsed["response"]
	var environment: RLEnvironment = service.get_environment()
	var answer := environment.step(parsed["actions"], parsed["auto_reset"])
	return [200, encode_step(answer), STEP_BINARY_CONTENT_TYPE]


## True when an Accept header lists the binary step type with a non-zero quality.
static func accepts_binary(accept: String) -> bool:
	for media_range in accept.split(","):
		var parts := media_range.split(";")
		if parts[0].strip_edges().to_lower() != STEP_BINARY_CONTENT_TYPE:
			continue
		var quality := 1.0
		for i in range(1, parts.size()):
			var param := parts[i].strip_edges()
			if param.to_lower().begins_with("q="):
				var value := param.substr(2).strip_edges()
				quality = value.to_float() if value.is_valid_float() else 0.0
		return quality > 0.0
	return false


## A step answer (RLEnvironment.step) as the binary body, byte for byte as docs/protocol.md lays it
## out: little-endian header, float32 observations, u32 collisions and teleports, u8 done, fell and
## goal_reached, zero padding to 4 bytes, then (u32 agent, float32[48]) per terminal observation.
static func encode_step(answer: Dictionary) -> PackedByteArray:
	var rows: Array = answer["observations"]
	var done: Array = answer["done"]
	var events: Array = answer["events"]
	var terminal: Dictionary = answer.get("terminal_observations", {})
	var n := rows.size()
	var out := StreamPeerBuffer.new()
	out.big_endian = false
	out.put_data(STEP_BINARY_MAGIC.to_ascii_buffer())
	out.put_u16(STEP_BINARY_VERSION)
	out.put_u16(STEP_BINARY_HEADER_SIZE)
	out.put_u32(n)
	out.put_u32(RLProtocol.OBSERVATION_SIZE)
	out.put_u64(int(answer["tick"]))
	out.put_u32(terminal.size())
	out.put_u32(0)
	for row: PackedFloat32Array in rows:
		out.put_data(row.to_byte_array())
	for key: String in ["collisions", "teleports"]:
		for event: Dictionary in events:
			out.put_u32(int(event[key]))
	for flag: bool in done:
		out.put_u8(1 if flag else 0)
	for key: String in ["fell", "goal_reached"]:
		for event: Dictionary in events:
			out.put_u8(1 if event[key] else 0)
	for _pad in posmod(-3 * n, 4):
		out.put_u8(0)
	var agents: Array[int] = []
	for key: String in terminal:
		agents.append(key.to_int())
	agents.sort()
	for agent in agents:
		out.put_u32(agent)
		var row: PackedFloat32Array = terminal[str(agent)]
		out.put_data(row.to_byte_array())
	return out.data_array


# ---------------------------------------------------------------- validation


## {actions: Array[Vector3], auto_reset: bool} or {status, response} for /rl/action and /rl/step.
func _step_request(body: PackedByteArray) -> Dictionary:
	var environment: RLEnvironment = service.get_environment()
	if environment == null:
		return {"status": 409, "response": _no_rl_scene()}
	var parsed := _json_object(body)
	if parsed.has("error"):
		return {"status": 400, "response": _error(400, parsed["error"])}
	var request: Dictionary = parsed["value"]
	var auto_reset: Variant = request.get("auto_reset", false)
	if typeof(auto_reset) != TYPE_BOOL:
		var message := "'auto_reset' is %s; expected true or false" % _describe(auto_reset)
		return {"status": 400, "response": _error(400, message)}
	var actions := _actions(request, environment.num_agents)
	if actions.has("error"):
		return {"status": 400, "response": _error(400, actions["error"])}
	return {"actions": actions["value"], "auto_reset": auto_reset}


## {value: Array[Vector3]} with each value clipped to [-1, 1], or {error}.
static func _actions(request: Dictionary, num_agents: int) -> Dictionary:
	if not request.has("actions"):
		return {"error": "missing field 'actions'; send %d rows of [h, v, r]" % num_agents}
	var rows: Variant = request["actions"]
	if typeof(rows) != TYPE_ARRAY:
		return {"error": "'actions' is %s; expected a list of [h, v, r] rows" % _describe(rows)}
	if (rows as Array).size() != num_agents:
		var count := (rows as Array).size()
		var fix := "expected %d, one [h, v, r] per agent" % num_agents
		return {"error": "'actions' has %d rows; %s" % [count, fix]}
	var actions: Array[Vector3] = []
	for i in num_agents:
		var row: Variant = rows[i]
		if typeof(row) != TYPE_ARRAY or (row as Array).size() != RLProtocol.ACTION_SIZE:
			return {
				"error": "actions row %d is %s; expected 3 numbers [h, v, r]" % [i, _describe(row)]
			}
		var values := PackedFloat64Array()
		for value: Variant in row:
			if not _is_finite_number(value):
				var what := _describe(value)
				return {"error": "actions row %d holds %s; expected finite numbers" % [i, what]}
			values.append(clampf(value, -1.0, 1.0))
		actions.append(Vector3(values[0], values[1], values[2]))
	return {"value": actions}


## {value: Array[int]} (every agent when `value` is null) or {error}.
static func _agent_indices(value: Variant, num_agents: int) -> Dictionary:
	var indices: Array[int] = []
	if value == null:
		for i in num_agents:
			indices.append(i)
		return {"value": indices}
	if typeof(value) != TYPE_ARRAY:
		return {
			"error": "'agents' is %s; expected a list of agent indices or null" % _describe(value)
		}
	for item: Variant in value:
		if not _is_integer(item) or item < 0 or item >= num_agents:
			var what := _describe(item)
			return {
				"error": "'agents' holds %s; expected indices in [0, %d]" % [what, num_agents - 1]
			}
		if int(item) in indices:
			return {"error": "'agents' lists agent %d twice; name each agent once" % int(item)}
		indices.append(int(item))
	return {"value": indices}


## {value: Dictionary} or {error}: the body parsed as a JSON object.
static func _json_object(body: PackedByteArray) -> Dictionary:
	if body.is_empty():
		return {"error": "the request body is empty; send a JSON object"}
	var json := JSON.new()
	if json.parse(body.get_string_from_utf8()) != OK:
		var where := "line %d: %s" % [json.get_error_line() + 1, json.get_error_message()]
		return {"error": "malformed JSON at %s; send a JSON object (no NaN or Infinity)" % where}
	if typeof(json.data) != TYPE_DICTIONARY:
		return {"error": "the body is %s; send a JSON object" % _describe(json.data)}
	return {"value": json.data}


## Why `path` cannot name a scene, or "" when it can.
static func _scene_path_problem(path: String) -> String:
	var shown := path.c_escape().left(120)
	if not path.begins_with("res://"):
		return "scene '%s' is not a res:// path; e.g. %s" % [shown, RLProtocol.DEFAULT_SCENE]
	if path.contains("..") or not (path.ends_with(".tscn") or path.ends_with(".scn")):
		return "scene '%s' must name a .tscn or .scn file inside the project" % shown
	for character in path:
		if character.unicode_at(0) < 32:
			return "scene '%s' contains a control character" % shown
	return ""


## JSON numbers arrive as floats; an integer is a finite one without a fraction.
static func _is_integer(value: Variant) -> bool:
	if typeof(value) == TYPE_INT:
		return true
	if typeof(value) != TYPE_FLOAT or not is_finite(value):
		return false
	return value == floorf(value) and absf(value) <= MAX_EXACT_INTEGER


static func _is_finite_number(value: Variant) -> bool:
	return typeof(value) == TYPE_INT or (typeof(value) == TYPE_FLOAT and is_finite(value))


static func _describe(value: Variant) -> String:
	if value == null:
		return "null"
	var text := JSON.stringify(value)
	if text.length() > 40:
		text = text.left(37) + "..."
	return "%s (%s)" % [text, type_string(typeof(value))]


func _authorized(headers: Dictionary) -> bool:
	var token: String = service.token
	if token.is_empty():
		return true
	# The token is visible ASCII (rl_service.gd refuses others); headers reach here decoded per
	# byte, so a non-ASCII byte becomes a code point > 127 and the two can never be equal.
	var expected := ("Bearer " + token).to_ascii_buffer()
	var header := str(headers.get("authorization", ""))
	for i in header.length():
		if header.unicode_at(i) > 126:
			return false
	var given: PackedByteArray = header.to_ascii_buffer()
	var difference := expected.size() ^ given.size()
	for i in expected.size():
		difference |= expected[i] ^ (given[i] if i < given.size() else 0)
	return difference == 0


func _no_rl_scene() -> Array:
	return _error(409, service.environment_problem())


static func _ok(payload: Dictionary) -> Array:
	return [200, JSON.stringify(payload, "", false).to_utf8_buffer(), JSON_TYPE]


static func _error(status: int, message: String) -> Array:
	return [status, JSON.stringify({"error": message}).to_utf8_buffer(), JSON_TYPE]
