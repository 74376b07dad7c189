class_name RLEnvironment
extends Node3D
## The RL agents of a scene and protocol v1's reset, step and observation over them.
##
## Stepping is deterministic and independent of wall-clock time: while an environment is in the
## tree the SceneTree stays paused, so nothing in the scene moves on its own. Agents move only
## inside `step()`, which runs `action_repeat` physics frames of 1/PHYSICS_HZ s synchronously
## (move_and_collide and direct space-state queries against the scene's colliders) before the HTTP
## answer is written. Speed is bound by the CPU, not by the frame rate, and the same seed and
## actions give the same trajectory. Dynamic scene content (rigid bodies, animations) stays frozen.
##
## Agents spawn at the Node3D markers in group "spacetime_rl_spawn", else at the scene's own
## XROrigin3D (whose player colliders the agents then ignore), else at this node. An agent whose
## reset option `scenario` is another of RLProtocol.SCENARIOS spawns at the markers in group
## "spacetime_rl_spawn_<scenario>" (an obstacle course or a maze built in the level around them);
## a scenario is offered, in /rl/spec, when the scene has such markers.
##
## On entering the tree it first lets the scene settle: the tree runs unpaused for
## SETTLE_PHYSICS_FRAMES physics frames, because CSG shapes and GridMap octants build their
## colliders in deferred calls (godot#76349) and a paused tree never steps the physics server, so
## rays cast at once would find no floor. Then, in an idle frame (where requests run), it checks
## that the physics can be queried and that every spawn point has floor under it, sets up the
## agents and emits `settled`; `problem` says why the scene cannot serve RL, or is empty.

signal settled

const GROUP := "spacetime_rl_environment"
const SPAWN_GROUP := "spacetime_rl_spawn"
## Goal distance bounds used while the reset options leave them unset (the simulator's values).
const DEFAULT_GOAL_DISTANCE := Vector2(3.0, 15.0)
const MAX_GOAL_DISTANCE := 40.0
const MAX_SPEED_LIMIT := 10.0
const MAX_ROTATION_SPEED_LIMIT := 720.0
## Reset options this server understands: protocol v1's four and the simulator's three.
const KNOWN_OPTIONS := [
	"min_goal_distance",
	"max_goal_distance",
	"max_speed",
	"max_rotation_speed",
	"turn_mode",
	"snap_angle",
	"scenario",
]
const TURN_MODES := ["smooth", "snap"]
## Two, not one: the first frame's step may run before CSG and GridMap flushed their deferred
## collider updates; the second certainly after.
const SETTLE_PHYSICS_FRAMES := 2
const THREADED_PHYSICS_SETTING := "physics/3d/run_on_separate_thread"

@export_range(1, 1024) var num_agents := 1
@export_range(1, 900) var action_repeat := RLProtocol.DEFAULT_ACTION_REPEAT
## Seed of the first reset; -1 draws one at random.
@export var initial_seed := -1
## Layers the agents collide with and sense (the level); the agent layer is removed from it.
@export_flags_3d_physics var world_collision_mask := 0x7FFFFFFF
## Layer (1-32) of the agents' own bodies: on it they pass through each other.
@export_range(1, 32) var agent_collision_layer := 32
## Layers only the sensor rays see, e.g. invisible colliders along pit edges and the floor's rim
## (docs/simulator.md); the downward probes find drop-offs without them, to about 1 cm.
@export_flags_3d_physics var sensor_only_mask := 0

var agents: Array[RLAgent] = []
## Why this scene cannot serve RL (a sentence naming the scene), or "" when it can.
var problem := ""
var is_settled := false
## Physics frames stepped since the scene was loaded.
var tick := 0
var _rngs: Array[RandomNumberGenerator] = []
var _options: Array[Dictionary] = []
var _spawns: Array[Vector3] = []
## Spawn points of the scenarios other than the open field that the scene has markers for.
var _scenario_spawns := {}
var _excluded: Array[CollisionObject3D] = []
var _settle_frames_left := 0


func _ready() -> void:
	add_to_group(GROUP)
	_settle_frames_left = SETTLE_PHYSICS_FRAMES
	get_tree().paused = false
	get_tree().physics_frame.connect(_on_settling_physics_frame)


func _exit_tree() -> void:
	var tree := get_tree()
	if tree.physics_frame.is_connected(_on_settling_physics_frame):
		tree.physics_frame.disconnect(_on_settling_physics_frame)
	if tree.process_frame.is_connected(_finish_settling):
		tree.process_frame.disconnect(_finish_settling)
	tree.paused = false


## The root of the scene this environment is part of: the ancestor just below the tree's root.
## (SceneTree.current_scene is null while /scene/load swaps scenes, and is set only after the
## new scene entered the tree.)
func scene_root() -> Node:
	var node: Node = self
	while node.get_parent() != null and node.get_parent() != get_tree().root:
		node = node.get_parent()
	return node


func _on_settling_physics_frame() -> void:
	_settle_frames_left -= 1
	if _settle_frames_left > 0:
		return
	get_tree().physics_frame.disconnect(_on_settling_physics_frame)
	get_tree().process_frame.connect(_finish_settling, CONNECT_ONE_SHOT)


func _finish_settling() -> void:
	get_tree().paused = true
	problem = _physics_problem()
	if problem.is_empty():
		setup()
	is_settled = true
	settled.emit()


## Requests run in idle frames; there the direct space state is null while the physics server runs
## on its own thread (GodotPhysicsServer3D refuses it outside the physics sync).
func _physics_problem() -> String:
	if (
		not ProjectSettings.get_setting(THREADED_PHYSICS_SETTING, false)
		and get_world_3d().direct_space_state != null
	):
		return ""
	var fix := "turn off Project Settings > Physics > 3D > Run on Separate Thread for training"
	return (
		"scene %s cannot be stepped: %s is on, so its physics cannot be queried between frames; %s"
		% [scene_root().scene_file_path, THREADED_PHYSICS_SETTING, fix]
	)


## (Re)builds `num_agents` agents and resets them all with `initial_seed`.
func setup() -> void:
	for agent in agents:
		remove_child(agent)
		agent.queue_free()
	agents.clear()
	_rngs.clear()
	_options.clear()
	tick = 0
	_find_spawns()
	problem = _floor_problem()
	if not problem.is_empty():
		return
	var headset := (
		XRServer.primary_interface != null and XRServer.primary_interface.is_initialized()
	)
	for i in num_agents:
		var agent := RLAgent.new()
		agent.name = "Agent%d" % i
		agent.animate_body = not headset
		agent.configure(world_collision_mask, agent_collision_layer, sensor_only_mask, _excluded)
		add_child(agent)
		agents.append(agent)
		_rngs.append(RandomNumberGenerator.new())
		_options.append({})
	var all_agents: Array[int] = []
	all_agents.assign(range(num_agents))
	reset(all_agents, initial_seed if initial_seed >= 0 else randi())


## Validates reset `options` and persists them for `indices`, all or nothing. Returns what is
## wrong (a sentence for the 400 answer), or "" when they are applied.
func configure(indices: Array[int], options: Dictionary) -> String:
	var updates := {}
	for key: String in ["min_goal_distance", "max_goal_distance"]:
		if options.has(key):
			var problem := _check_number(key, options[key], 0.0, MAX_GOAL_DISTANCE, true, "m")
			if not problem.is_empty():
				return problem
			updates[key] = options[key]
	for limit: Array in [
		["max_speed", MAX_SPEED_LIMIT, "m/s"],
		["max_rotation_speed", MAX_ROTATION_SPEED_LIMIT, "deg/s"],
		["snap_angle", 180.0, "deg"],
	]:
		if options.has(limit[0]):
			var problem := _check_number(
				limit[0], options[limit[0]], 0.0, limit[1], false, limit[2]
			)
			if not problem.is_empty():
				return problem
			updates[limit[0]] = options[limit[0]]
	if options.has("turn_mode"):
		var mode: Variant = options["turn_mode"]
		if mode != null and not (typeof(mode) == TYPE_STRING and mode in TURN_MODES):
			var seen := JSON.stringify(mode)
			return "reset option 'turn_mode' is %s; expected smooth or snap, or null" % seen
		updates["turn_mode"] = mode
	if options.has("scenario"):
		var scenario: Variant = options["scenario"]
		if scenario != null and not (typeof(scenario) == TYPE_STRING and scenario in scenarios()):
			return (
				"reset option 'scenario' is %s; expected one of %s, or null"
				% [JSON.stringify(scenario), ", ".join(scenarios())]
			)
		updates["scenario"] = scenario
	for i in indices:
		var merged := _options[i].merged(updates, true)
		var low: Variant = merged.get("min_goal_distance")
		var high: Variant = merged.get("max_goal_distance")
		if low != null and high != null and low > high:
			var fix := "pass a min no larger than the max"
			return (
				"reset option 'min_goal_distance' (%s m) exceeds 'max_goal_distance' (%s m) for agent %d; %s"
				% [low, high, i, fix]
			)
	for i in indices:
		for key: String in updates:
			if updates[key] == null:
				_options[i].erase(key)
			else:
				_options[i][key] = updates[key]
	return ""


## The values the `scenario` reset option accepts in this scene, the default first.
func scenarios() -> Array:
	var names := [RLProtocol.DEFAULT_SCENARIO]
	names.append_array(_scenario_spawns.keys())
	return names


## Option keys this server does not know, sorted (they are reported, not refused).
func ignored_options(options: Dictionary) -> Array:
	var ignored := []
	for key: Variant in options:
		if str(key) not in KNOWN_OPTIONS:
			ignored.append(str(key))
	ignored.sort()
	return ignored


## Starts new episodes for `indices` in that order and returns their observations. With a seed,
## agent i draws from (seed, i); with null each agent continues its own random stream.
func reset(indices: Array[int], seed_value: Variant) -> Array:
	var observations := []
	for i in indices:
		if seed_value != null:
			_rngs[i].seed = hash("%d:%d" % [seed_value, i])
		_reset_agent(i)
		observations.append(agents[i].observation)
	return observations


## Applies one action per agent for `action_repeat` physics frames; with `auto_reset`, every done
## agent starts over at once and its last observation goes in `terminal_observations`.
func step(actions: Array[Vector3], auto_reset: bool) -> Dictionary:
	for agent in agents:
		agent.begin_action()
	for _frame in action_repeat:
		for i in agents.size():
			agents[i].physics_tick(actions[i])
	tick += action_repeat
	for agent in agents:
		agent.end_action()
	var answer := state()
	var rows := observations()
	if auto_reset:
		var terminal := {}
		for i in agents.size():
			if agents[i].done:
				terminal[str(i)] = agents[i].observation
				_reset_agent(i)
				rows[i] = agents[i].observation
		answer["terminal_observations"] = terminal
	answer["observations"] = rows
	return answer


func observations() -> Array:
	var rows := []
	for agent in agents:
		rows.append(agent.observation)
	return rows


## Done flags, the events of the last action and the tick.
func state() -> Dictionary:
	var done := []
	var events := []
	for agent in agents:
		done.append(agent.done)
		events.append(agent.events())
	return {"done": done, "events": events, "tick": tick}


func _reset_agent(i: int) -> void:
	var rng := _rngs[i]
	var options := _options[i]
	var spawns: Array[Vector3] = _scenario_spawns.get(options.get("scenario"), _spawns)
	var spawn := spawns[rng.randi_range(0, spawns.size() - 1)] if spawns.size() > 1 else spawns[0]
	# An unset bound defaults without crossing the other one (as in the simulator).
	var high_set: float = options.get("max_goal_distance", INF)
	var low: float = options.get("min_goal_distance", minf(DEFAULT_GOAL_DISTANCE.x, high_set))
	var high: float = options.get("max_goal_distance", maxf(DEFAULT_GOAL_DISTANCE.y, low))
	agents[i].reset(rng, spawn, low, high, options)


func _find_spawns() -> void:
	_spawns.clear()
	_excluded.clear()
	_scenario_spawns.clear()
	for scenario: String in RLProtocol.SCENARIOS.slice(1):
		var points: Array[Vector3] = []
		for marker in get_tree().get_nodes_in_group("%s_%s" % [SPAWN_GROUP, scenario]):
			if marker is Node3D:
				points.append((marker as Node3D).global_position)
		if not points.is_empty():
			_scenario_spawns[scenario] = points
	for marker in get_tree().get_nodes_in_group(SPAWN_GROUP):
		if marker is Node3D:
			_spawns.append((marker as Node3D).global_position)
	for found in scene_root().find_children("*", "XROrigin3D", true, false):
		var player_origin := found as XROrigin3D
		if _is_own(player_origin):
			continue
		if _spawns.is_empty():
			_spawns.append(player_origin.global_position)
		# The scene's own player: its body and anything under its origin is not an obstacle.
		if player_origin.get_parent() is CollisionObject3D:
			_excluded.append(player_origin.get_parent())
		for body in player_origin.find_children("*", "CollisionObject3D", true, false):
			_excluded.append(body)
	if _spawns.is_empty():
		_spawns.append(global_position)


## The first spawn point without floor under it (within RLAgent.STEP_HEIGHT, on
## world_collision_mask), as a sentence naming the scene; "" when every one has floor.
func _floor_problem() -> String:
	var query := PhysicsRayQueryParameters3D.new()
	query.collision_mask = world_collision_mask & ~(1 << (agent_collision_layer - 1))
	var excluded: Array[RID] = []
	for body in _excluded:
		excluded.append(body.get_rid())
	query.exclude = excluded
	var space := get_world_3d().direct_space_state
	var spawns := {RLProtocol.DEFAULT_SCENARIO: _spawns}
	spawns.merge(_scenario_spawns)
	for scenario: String in spawns:
		for point: Vector3 in spawns[scenario]:
			query.from = point + Vector3.UP * RLAgent.STEP_HEIGHT
			query.to = point + Vector3.DOWN * RLAgent.STEP_HEIGHT
			var hit := space.intersect_ray(query)
			if not hit.is_empty() and (hit["normal"] as Vector3).y >= RLAgent.FLOOR_MIN_NORMAL_Y:
				continue
			var fix := (
				"put floor colliders on the world_collision_mask layers %d under it"
				% query.collision_mask
			)
			return (
				(
					"scene %s has no floor within %.1f m under the %s spawn point %s after %d"
					+ " physics frames; %s, or move the marker"
				)
				% [
					scene_root().scene_file_path,
					RLAgent.STEP_HEIGHT,
					scenario,
					point,
					SETTLE_PHYSICS_FRAMES,
					fix,
				]
			)
	return ""


func _is_own(node: Node) -> bool:
	for agent in agents:
		if agent.is_ancestor_of(node):
			return true
	return false


static func _check_number(
	key: String, value: Variant, low: float, high: float, low_included: bool, unit: String
) -> String:
	if value == null:
		return ""
	var is_number := typeof(value) == TYPE_INT or typeof(value) == TYPE_FLOAT
	if (
		is_number
		and is_finite(value)
		and value <= high
		and (value > low or low_included and value == low)
	):
		return ""
	var bracket := "[" if low_included else "("
	return (
		"reset option '%s' is %s; expected a number in %s%s, %s] %s, or null for the default"
		% [key, JSON.stringify(value), bracket, low, high, unit]
	)
