class_name RLService
extends Node
## The SpacetimeRL autoload: reads the --rl-* flags, serves protocol v1 and loads scenes.
##
## Flags follow `--` on the Godot command line (OS.get_cmdline_user_args), e.g.
## `godot --headless --path . -- --rl-port=8080 --rl-agents=16 --rl-scene=res://...`:
##   --rl-port=PORT (8080; 0 lets the OS pick), --rl-host=ADDRESS (127.0.0.1), --rl-token=TOKEN
##   (or the SPACETIME_RL_TOKEN environment variable), --rl-seed=N, --rl-agents=N,
##   --rl-action-repeat=N, --rl-scene=res://..., --rl-max-body-bytes=N, --rl-poll-budget-ms=N,
##   --rl-allowed-host=NAME and --rl-allowed-origin=ORIGIN (repeatable), --rl-insecure.
## Once it listens (and the --rl-scene is loaded) it prints one line to stdout:
## `spacetime-rl listening on http://HOST:PORT`, and the same line to stderr when stdout is not
## flushed on print (application/run/flush_stdout_on_print off, the release default), so a launcher
## reading a pipe or file sees it at once. Release exports serve only when an --rl- flag is given;
## debug builds (the editor's Play button) always do.

const WHITELIST_PATH := "res://config/scene_whitelist.json"
const TOKEN_VARIABLE := "SPACETIME_RL_TOKEN"
const READY_LINE := "spacetime-rl listening on http://%s:%d"
const FLAG_PREFIX := "--rl-"
const INTEGER_FLAGS := [
	"port", "seed", "agents", "action-repeat", "max-body-bytes", "poll-budget-ms"
]
const TEXT_FLAGS := ["host", "token", "scene", "allowed-host", "allowed-origin"]
## Flags without a value.
const SWITCH_FLAGS := ["insecure"]
## Headless instances keep answering requests for this long per frame: a step then waits for a
## round trip, not for the next frame. Windowed runs answer once per frame to keep rendering smooth.
const HEADLESS_POLL_BUDGET_MS := 10

var host := RLProtocol.DEFAULT_HOST
var port := RLProtocol.DEFAULT_PORT
var token := ""
var max_body_bytes := 1 << 20
## Overrides of the scene's RLEnvironment; -1 keeps the scene's own value.
var num_agents := -1
var action_repeat := -1
var seed_value: Variant = null
var startup_scene := ""
var poll_budget_ms := 0
## Host names served besides the loopback ones, and web origins served at all (rl_access.gd).
var allowed_hosts := PackedStringArray()
var allowed_origins := PackedStringArray()
## Listen on a non-loopback --rl-host without a token (anyone on the network can drive the game).
var insecure := false
var api: RLApi
var _server: RLHttpServer
var _whitelist := PackedStringArray()
var _environment: RLEnvironment


func _ready() -> void:
	process_mode = Node.PROCESS_MODE_ALWAYS
	var args := OS.get_cmdline_user_args()
	var has_flags := false
	for arg in args:
		has_flags = has_flags or arg.begins_with(FLAG_PREFIX)
	if not OS.is_debug_build() and not has_flags:
		return
	token = OS.get_environment(TOKEN_VARIABLE)
	if DisplayServer.get_name() == "headless":
		poll_budget_ms = HEADLESS_POLL_BUDGET_MS
	var problem := _parse_flags(args)
	if not problem.is_empty():
		printerr("spacetime-rl: %s" % problem)
		get_tree().quit(2)
		return
	_whitelist = _read_whitelist()
	_start.call_deferred()


func _process(_delta: float) -> void:
	if _server == null:
		return
	var deadline := Time.get_ticks_msec() + poll_budget_ms
	_server.poll()
	while Time.get_ticks_msec() < deadline:
		if _server.poll() == 0:
			OS.delay_usec(50)


func _exit_tree() -> void:
	if _server != null:
		_server.stop()


## Runs after the main scene is in the tree, so --rl-scene replaces it; listens once it settled.
func _start() -> void:
	if not startup_scene.is_empty():
		var loaded := load_scene(startup_scene)
		if loaded != OK:
			printerr("spacetime-rl: --rl-scene=%s: %s" % [startup_scene, error_string(loaded)])
			get_tree().quit(2)
			return
		var environment := _environment
		if not environment.is_settled:
			await environment.settled
		if not environment.problem.is_empty():
			printerr("spacetime-rl: --rl-scene=%s: %s" % [startup_scene, environment.problem])
			get_tree().quit(2)
			return
	api = RLApi.new(self)
	_server = RLHttpServer.new(api.handle, max_body_bytes)
	var listening := _server.listen(port, host)
	if listening != OK:
		var fix := "pass a free --rl-port (the project's own HTTP API may hold %d)" % port
		printerr(
			(
				"spacetime-rl: cannot listen on %s:%d (%s); %s"
				% [host, port, error_string(listening), fix]
			)
		)
		_server = null
		get_tree().quit(2)
		return
	var ready_line := READY_LINE % [host, _server.get_port()]
	print(ready_line)
	if not ProjectSettings.get_setting("application/run/flush_stdout_on_print", false):
		printerr(ready_line)  # stderr is unbuffered; stdout would hold the line in its buffer


## The RL environment of the current scene once it settled and can serve RL, or null.
func get_environment() -> RLEnvironment:
	var environment := get_loaded_environment()
	if environment == null or not environment.is_settled or not environment.problem.is_empty():
		return null
	return environment


## The RL environment of the current scene, settled or not, or null when it has none.
func get_loaded_environment() -> RLEnvironment:
	if is_instance_valid(_environment) and _environment.is_inside_tree():
		return _environment
	var found := get_tree().get_nodes_in_group(RLEnvironment.GROUP)
	_environment = found[0] as RLEnvironment if not found.is_empty() else null
	return _environment


## Why get_environment() is null, as a sentence.
func environment_problem() -> String:
	var environment := get_loaded_environment()
	if environment == null:
		var fix := 'POST /scene/load {"scene": "%s"} first' % RLProtocol.DEFAULT_SCENE
		return "no RL scene is loaded; " + fix
	if not environment.is_settled:
		return "scene %s is still loading" % environment.scene_root().scene_file_path
	return environment.problem


## res:// path of the current scene, or null before one is loaded.
func get_scene_path() -> Variant:
	var scene := get_tree().current_scene
	if scene == null or scene.scene_file_path.is_empty():
		return null
	return scene.scene_file_path


func is_whitelisted(path: String) -> bool:
	return path in _whitelist


## Replaces the current scene by `path` at once (not at the end of the frame, as
## change_scene_to_file would) and gives it an RLEnvironment if it has none. The environment is
## ready for RL once it emits `settled` (a few physics frames later) with an empty `problem`.
func load_scene(path: String) -> Error:
	var packed := ResourceLoader.load(path, "PackedScene") as PackedScene
	if packed == null or not packed.can_instantiate():
		return ERR_CANT_OPEN
	var scene := packed.instantiate()
	var environment := _find_environment(scene)
	if environment == null:
		environment = RLEnvironment.new()
		environment.name = "RLEnvironment"
		scene.add_child(environment)
	_apply_overrides(environment)  # before it enters the tree and sets up its agents
	var tree := get_tree()
	var previous := tree.current_scene
	if previous != null:
		tree.root.remove_child(previous)
		previous.queue_free()
	_environment = environment
	tree.root.add_child(scene)
	tree.current_scene = scene
	return OK


static func _find_environment(node: Node) -> RLEnvironment:
	if node is RLEnvironment:
		return node as RLEnvironment
	for child in node.get_children():
		var found := _find_environment(child)
		if found != null:
			return found
	return null


func _apply_overrides(environment: RLEnvironment) -> void:
	if num_agents > 0:
		environment.num_agents = num_agents
	if action_repeat > 0:
		environment.action_repeat = action_repeat
	if seed_value != null:
		environment.initial_seed = seed_value


## Reads --rl-NAME=VALUE flags into the settings; returns what is wrong, or "".
func _parse_flags(args: PackedStringArray) -> String:
	for arg in args:
		if not arg.begins_with(FLAG_PREFIX):
			continue
		var parts := arg.trim_prefix(FLAG_PREFIX).split("=", true, 1)
		var flag := parts[0]
		if flag in SWITCH_FLAGS and parts.size() == 1:
			insecure = true
			continue
		if parts.size() != 2 or parts[1].is_empty():
			return "%s needs a value: --rl-%s=VALUE" % [arg, flag]
		var value := parts[1]
		if flag in INTEGER_FLAGS:
			if not value.is_valid_int() or value.to_int() < 0:
				return "%s: %s is not a non-negative integer" % [arg, value]
			_set_integer_flag(flag, value.to_int())
		elif flag in TEXT_FLAGS:
			_set_text_flag(flag, value)
		else:
			var known := ", ".join(INTEGER_FLAGS + TEXT_FLAGS + SWITCH_FLAGS)
			return "unknown flag %s; the --rl- flags are: %s" % [arg, known]
	if port > 65535:
		return "--rl-port=%d is not a TCP port (0-65535)" % port
	if num_agents == 0 or action_repeat == 0 or max_body_bytes == 0:
		return "--rl-agents, --rl-action-repeat and --rl-max-body-bytes must be at least 1"
	if num_agents > RLProtocol.MAX_AGENTS:
		return (
			"--rl-agents=%d is more than the %d one server runs"
			% [num_agents, RLProtocol.MAX_AGENTS]
		)
	if not token.is_empty() and not RLAccess.is_valid_token(token):
		return "the token must be 1 to 256 visible ASCII characters (no spaces)"
	return _listen_problem()


## A non-loopback --rl-host needs a token, or --rl-insecure (then a warning).
func _listen_problem() -> String:
	if RLAccess.is_loopback(RLAccess.host_name(host)) or not token.is_empty():
		return ""
	if not insecure:
		var fix := "pass --rl-token (or set %s), or --rl-insecure" % TOKEN_VARIABLE
		return "--rl-host=%s is reachable from other machines without a token; %s" % [host, fix]
	push_warning("spacetime-rl: serving on %s without a token (--rl-insecure)" % host)
	return ""


func _set_integer_flag(flag: String, value: int) -> void:
	match flag:
		"port":
			port = value
		"seed":
			seed_value = value
		"agents":
			num_agents = value
		"action-repeat":
			action_repeat = value
		"max-body-bytes":
			max_body_bytes = value
		"poll-budget-ms":
			poll_budget_ms = value


func _set_text_flag(flag: String, value: String) -> void:
	match flag:
		"host":
			host = value
		"token":
			token = value
		"scene":
			startup_scene = value
		"allowed-host":
			allowed_hosts.append(value.to_lower())
		"allowed-origin":
			allowed_origins.append(value)


## Scene paths from WHITELIST_PATH: a JSON list, or {"scenes": [...]}. Missing: nothing loads.
func _read_whitelist() -> PackedStringArray:
	var scenes := PackedStringArray()
	if not FileAccess.file_exists(WHITELIST_PATH):
		push_warning("spacetime-rl: no %s; /scene/load refuses every scene" % WHITELIST_PATH)
		return scenes
	var data: Variant = JSON.parse_string(FileAccess.get_file_as_string(WHITELIST_PATH))
	if typeof(data) == TYPE_DICTIONARY:
		data = (data as Dictionary).get("scenes")
	if typeof(data) != TYPE_ARRAY:
		push_error("spacetime-rl: %s must be a JSON list of scene paths" % WHITELIST_PATH)
		return scenes
	for scene: Variant in data:
		if typeof(scene) == TYPE_STRING:
			scenes.append(scene)
	return scenes
