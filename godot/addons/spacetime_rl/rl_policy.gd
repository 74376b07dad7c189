class_name RLPolicy
extends Node
## Drives an RLAgent in the running game with a policy exported by spacetime_rl, run through
## godot_rl_agents' ONNX wrapper (inputs `obs` [1, 48 + tasks] and `state_ins` [1]; outputs
## `output` [1, 3] and `state_outs`). The wrapper's `run_inference` takes a Dictionary of input name
## -> values since godot_rl_agents_plugin PR #52 (May 2025) and an Array before; both are supported,
## told apart by the wrapper's signature when the model loads.
##
## The policy sees what it saw in training: the agent's 48-float protocol observation, preprocessed
## as spacetime_rl/envs/preprocessing.py does, as the JSON sidecar next to the model describes it
## (`<model>.json`, see godot/README.md). Each action lasts `action_repeat` physics frames and is
## smoothed exponentially with the sidecar's factor, as in training. A multi-task model (the sidecar
## lists `tasks`) also sees the one-hot of `task` after the 48 floats.
##
## The agent moves in ticks of 1/PHYSICS_HZ s, as in training, whatever the project's physics rate:
## each physics frame runs as many ticks as its delta holds (rounded, the remainder carried).
##
## An LSTM model (trained with network=lstm; the sidecar's `state_size` is above 0) remembers: this
## node keeps its agent's state, feeds it as the `lstm_state` input and keeps the `state_outs` the
## model returns, and starts each episode from zeros, as training did. That needs the wrapper's
## Dictionary form (godot_rl_agents_plugin from PR #52 on).

signal episode_finished(goal_reached: bool)

const WRAPPER_PATH := "res://addons/godot_rl_agents/onnx/wrapper/ONNX_wrapper.gd"
## The model's observation input (spacetime_rl/export.py INPUT_NAMES[0]); the Dictionary form of
## run_inference feeds each key as the ONNX input of that name.
const OBS_INPUT := "obs"
## An LSTM model's state input (spacetime_rl/export.py MEMORY_INPUT).
const MEMORY_INPUT := "lstm_state"
## World-axis 3-vectors rotated into the heading frame (preprocessing.py's _WORLD_VECTORS).
const WORLD_VECTORS := [
	"camera_velocity",
	"camera_angular_velocity",
	"left_controller_position",
	"right_controller_position",
	"left_controller_velocity",
	"right_controller_velocity",
	"goal_relative_position",
	"goal_direction",
]

@export_file("*.onnx") var model_path := ""
@export var agent: RLAgent
## Where the agent should go; read at every action.
@export var goal: Node3D
## What a multi-task model should do: one of its sidecar's `tasks`; empty for the first of them.
@export var task := ""

var action_repeat := RLProtocol.DEFAULT_ACTION_REPEAT
var smoothing := 0.0
var heading_frame := false
## The model's tasks in the order of its task block; empty for a single-task model.
var tasks := PackedStringArray()
var _model: Object
## The wrapper's run_inference takes {OBS_INPUT: values} (current plugin) rather than the values.
var _dictionary_input := true
## Ticks of 1/PHYSICS_HZ s owed to the agent by the physics frames so far (see _physics_process).
var _ticks_owed := 0.0
var _mean := PackedFloat32Array()
var _scale := PackedFloat32Array()
var _clip := INF
var _action := Vector3.ZERO
var _frame := 0
## An LSTM model's state for this agent (state_size floats); empty for a model without memory.
var _memory := PackedFloat32Array()


func _ready() -> void:
	set_physics_process(false)
	var problem := _load()
	if not problem.is_empty():
		push_error("spacetime-rl policy %s: %s" % [model_path, problem])
		return
	# A policy above the agent in the tree (or inside it) is ready first: the agent builds its rig
	# in its own _ready, and start_episode needs the rig.
	if not agent.is_node_ready():
		await agent.ready
	_memory.fill(0.0)
	agent.start_episode(goal.global_position if goal != null else agent.goal)
	set_physics_process(true)


func _physics_process(delta: float) -> void:
	# Rounded to the nearest tick: at 90 Hz exactly one per frame despite float error in delta.
	_ticks_owed += delta * RLProtocol.PHYSICS_HZ
	while _ticks_owed >= 0.5:
		_ticks_owed -= 1.0
		_tick()


## One physics tick of 1/PHYSICS_HZ s: a new action every `action_repeat` ticks.
func _tick() -> void:
	if agent.done:
		return
	if _frame % action_repeat == 0:
		agent.end_action()
		agent.begin_action()
		if goal != null:
			agent.goal = goal.global_position
		_action = _smoothed(_infer(preprocess(agent.observation)))
	_frame += 1
	agent.physics_tick(_action)
	if agent.done:
		_action = Vector3.ZERO
		episode_finished.emit(agent.events()["goal_reached"])


## Starts over towards `goal_position` with fresh smoothing and memory.
func restart(goal_position: Vector3) -> void:
	_action = Vector3.ZERO
	_memory.fill(0.0)
	_frame = 0
	_ticks_owed = 0.0
	agent.start_episode(goal_position)


## The policy's input for one protocol observation (preprocessing.py, one row), then the task block.
func preprocess(observation: PackedFloat32Array) -> PackedFloat32Array:
	var obs := observation.duplicate()
	var camera := _vector(obs, "camera_position")
	for side in ["left", "right"]:
		var field: String = side + "_controller_position"
		_set_vector(obs, field, _vector(obs, field) - camera)
	var position_at := RLProtocol.offset_of("camera_position")
	obs[position_at] = 0.0
	obs[position_at + 2] = 0.0
	if heading_frame:
		var at := RLProtocol.offset_of("camera_rotation")
		var x := obs[at]
		var y := obs[at + 1]
		var z := obs[at + 2]
		var w := obs[at + 3]
		var yaw := atan2(2.0 * (x * z + w * y), 1.0 - 2.0 * (x * x + y * y))
		for field: String in WORLD_VECTORS:
			var v := _vector(obs, field)
			_set_vector(
				obs,
				field,
				Vector3(cos(yaw) * v.x - sin(yaw) * v.z, v.y, sin(yaw) * v.x + cos(yaw) * v.z)
			)
		# q_local = conj(q_yaw) * q with q_yaw = (0, sin(yaw/2), 0, cos(yaw/2))
		var qy := sin(0.5 * yaw)
		var qw := cos(0.5 * yaw)
		obs[at] = qw * x - qy * z
		obs[at + 1] = qw * y - qy * w
		obs[at + 2] = qw * z + qy * x
		obs[at + 3] = qw * w + qy * y
	for name in tasks:
		obs.append(1.0 if name == task else 0.0)
	if not _mean.is_empty():
		for i in obs.size():
			obs[i] = clampf((obs[i] - _mean[i]) / _scale[i], -_clip, _clip)
	return obs


func _infer(obs: PackedFloat32Array) -> Vector3:
	var values := Array(obs)
	var inputs: Variant = {OBS_INPUT: values} if _dictionary_input else values
	if not _memory.is_empty():
		inputs[MEMORY_INPUT] = Array(_memory)
	var result: Variant = _model.call("run_inference", inputs, 0)
	if typeof(result) != TYPE_DICTIONARY or not (result as Dictionary).has("output"):
		push_error("spacetime-rl policy %s: inference failed; the agent stands still" % model_path)
		return Vector3.ZERO
	if not _memory.is_empty():
		var state: Array = result.get("state_outs", [])
		if state.size() != _memory.size():
			push_error(
				"spacetime-rl policy %s: state_outs has %d values" % [model_path, state.size()]
			)
			return Vector3.ZERO
		_memory = PackedFloat32Array(state)
	var output: Array = result["output"]
	return Vector3(output[0], output[1], output[2])


## a_t = s * a_(t-1) + (1 - s) * clip(raw), clipped to [-1, 1] (preprocessing.ActionSmoother).
func _smoothed(raw: Vector3) -> Vector3:
	var clipped := raw.clamp(-Vector3.ONE, Vector3.ONE)
	var smoothed := smoothing * _action + (1.0 - smoothing) * clipped
	return smoothed.clamp(-Vector3.ONE, Vector3.ONE)


## Reads the sidecar and loads the model; returns what is wrong, or "".
func _load() -> String:
	if agent == null:
		return "set the agent property to an RLAgent"
	var sidecar_path := model_path.get_basename() + ".json"
	var sidecar: Variant = JSON.parse_string(FileAccess.get_file_as_string(sidecar_path))
	if typeof(sidecar) != TYPE_DICTIONARY:
		return "no readable JSON sidecar at %s; export the model with spacetime_rl" % sidecar_path
	var problem := _read_sidecar(sidecar)
	if not problem.is_empty():
		return "%s: %s" % [sidecar_path, problem]
	if not ResourceLoader.exists(WRAPPER_PATH):
		return "godot_rl_agents' ONNX wrapper is missing (%s); install that addon" % WRAPPER_PATH
	var wrapper: GDScript = load(WRAPPER_PATH)
	_dictionary_input = _takes_dictionary(wrapper)
	if not _memory.is_empty() and not _dictionary_input:
		return "an LSTM model needs godot_rl_agents_plugin with run_inference(Dictionary, int)"
	_model = wrapper.new(model_path, 1)
	return ""


## Whether the wrapper's run_inference takes a Dictionary (plugin from PR #52 on) or an Array.
static func _takes_dictionary(wrapper: GDScript) -> bool:
	for method: Dictionary in wrapper.get_script_method_list():
		if method["name"] == "run_inference" and not (method["args"] as Array).is_empty():
			return method["args"][0]["type"] != TYPE_ARRAY
	return true


func _read_sidecar(sidecar: Dictionary) -> String:
	var protocol: Variant = sidecar.get("protocol")
	if typeof(protocol) != TYPE_FLOAT or protocol != RLProtocol.PROTOCOL_VERSION:
		return "protocol %s, but this addon speaks %d" % [protocol, RLProtocol.PROTOCOL_VERSION]
	if not _same_layout(sidecar.get("observation_fields")):
		var fields := JSON.stringify(sidecar.get("observation_fields"))
		return "observation_fields %s differ from this addon's layout" % fields.left(200)
	action_repeat = int(sidecar.get("action_repeat", RLProtocol.DEFAULT_ACTION_REPEAT))
	smoothing = float(sidecar.get("action_smoothing", 0.0))
	heading_frame = bool(sidecar.get("heading_frame", false))
	if action_repeat < 1 or smoothing < 0.0 or smoothing >= 1.0:
		return "action_repeat must be >= 1 and action_smoothing in [0, 1)"
	var physics_hz: Variant = sidecar.get("physics_hz", float(RLProtocol.PHYSICS_HZ))
	if physics_hz != float(RLProtocol.PHYSICS_HZ):
		return "physics_hz %s, but this addon steps at %d Hz" % [physics_hz, RLProtocol.PHYSICS_HZ]
	var listed: Variant = sidecar.get("tasks", [])
	if typeof(listed) != TYPE_ARRAY:
		return "tasks must be a list of task names"
	tasks = PackedStringArray(listed)
	var state_size: Variant = sidecar.get("state_size", 0.0)
	if typeof(state_size) != TYPE_FLOAT or state_size < 0 or state_size != int(state_size):
		return "state_size must be a whole number of floats"
	_memory = PackedFloat32Array()
	_memory.resize(int(state_size))
	if not tasks.is_empty() and task.is_empty():
		task = tasks[0]
	if not tasks.is_empty() and not tasks.has(task):
		return "task %s is not one of the model's tasks %s; set the task property" % [task, tasks]
	var normalization: Variant = sidecar.get("observation_normalization")
	if normalization == null:
		return ""
	var mean: Array = normalization.get("mean", [])
	var variance: Array = normalization.get("var", [])
	var size := RLProtocol.OBSERVATION_SIZE + tasks.size()
	if mean.size() != size or variance.size() != mean.size():
		return "observation_normalization needs %d 'mean' and %d 'var' values" % [size, size]
	var epsilon := float(normalization.get("epsilon", 1e-8))
	_clip = float(normalization.get("clip", INF))
	_mean = PackedFloat32Array(mean)
	_scale = PackedFloat32Array()
	for value: float in variance:
		_scale.append(sqrt(value + epsilon))
	return ""


## JSON numbers arrive as floats, so the layout is compared field by field.
static func _same_layout(fields: Variant) -> bool:
	if (
		typeof(fields) != TYPE_ARRAY
		or (fields as Array).size() != RLProtocol.OBSERVATION_FIELDS.size()
	):
		return false
	for i in RLProtocol.OBSERVATION_FIELDS.size():
		var field: Variant = fields[i]
		var expected: Array = RLProtocol.OBSERVATION_FIELDS[i]
		if typeof(field) != TYPE_DICTIONARY:
			return false
		if field.get("name") != expected[0] or field.get("size") != float(expected[1]):
			return false
	return true


static func _vector(obs: PackedFloat32Array, field: String) -> Vector3:
	var at := RLProtocol.offset_of(field)
	return Vector3(obs[at], obs[at + 1], obs[at + 2])


static func _set_vector(obs: PackedFloat32Array, field: String, value: Vector3) -> void:
	var at := RLProtocol.offset_of(field)
	obs[at] = value.x
	obs[at + 1] = value.y
	obs[at + 2] = value.z
