class_name RLAgent
extends CharacterBody3D
## One VR player: an XR rig (XROrigin3D, XRCamera3D, left and right XRController3D) on a capsule
## body, moved by [h, v, r] actions and sensed as protocol v1's 48-float observation.
##
## It follows the embedded simulator (docs/simulator.md, spacetime_rl/sim/world.py): the same player
## size, eye and ray heights, acceleration limit, snap turning, goal radius, contact, fall and goal
## rules, and the same synthetic head bob, sway and hand swing while no headset drives the rig. The
## arena is whatever the scene's colliders are. The body's origin is the XR origin, the point on the
## floor under the player. An XROrigin3D child (with XRCamera3D and XRController3D children) is used
## as it is; without one the agent builds the rig itself.

# --- shared with the simulator (same names and values as spacetime_rl/sim/world.py, collisions.py)
const PLAYER_RADIUS := 0.3
const EYE_HEIGHT := 1.7
const RAY_HEIGHT := 1.2
const MAX_ACCELERATION := 8.0
const CONTACT_SLOP := 0.001
const SNAP_THRESHOLD := 0.5
const SNAP_COOLDOWN_FRAMES := 27
const DEFAULT_SNAP_ANGLE := 45.0
const GOAL_RADIUS := 0.6
const STRIDE_LENGTH := 1.4
const BOB_AMPLITUDE := 0.03
const ROLL_SWAY := 0.02
const ROLL_PER_YAW_RATE := 0.04
const PITCH_PER_ACCELERATION := 0.01
const SWAY_TIME_CONSTANT := 0.15
const WALK_REFERENCE_SPEED := 2.0
const HAND_SWING := 0.08
## Controller offsets in the player's frame (x right, y up, z back), metres above the XR origin.
const LEFT_HAND_OFFSET := Vector3(-0.2, 1.1, -0.35)
const RIGHT_HAND_OFFSET := Vector3(0.2, 1.1, -0.35)
# --- Godot only: the scene's floor is not a flat plane ------------------------------------------
## Floors up to this far above or below are walked onto; a bigger drop (or none) is a drop-off edge.
## The capsule starts this high, so low steps never block it.
const STEP_HEIGHT := 0.3
## Steeper surfaces (normal.y below this, about 45 degrees) are walls, not floor.
const FLOOR_MIN_NORMAL_Y := 0.7
## Spacing of the downward probes along each sensor ray; a drop-off edge found between two probes
## is refined by PROBE_REFINEMENTS halvings (0.25 m / 32, under 1 cm).
const PROBE_SPACING := 0.25
const PROBE_REFINEMENTS := 5
const GOAL_ATTEMPTS := 64
## A goal keeps this much room beyond the player's radius from solids, and floor under its rim.
const GOAL_CLEARANCE := 0.1
## Goals are placed on floors at most this far above or below the spawn point.
const GOAL_MAX_CLIMB := 1.0
const MAX_SLIDES := 4
const MAX_CONTACTS := 32
const DT := 1.0 / RLProtocol.PHYSICS_HZ

## Drive the camera and controllers with the simulator's head bob, sway and hand swing. The
## environment turns this off while an XR interface tracks a real headset.
var animate_body := true
var origin: XROrigin3D
var camera: XRCamera3D
var left_controller: XRController3D
var right_controller: XRController3D
## The current protocol observation; a done agent keeps the one it ended with.
var observation := PackedFloat32Array()
var done := false
var goal := Vector3.ZERO
var max_speed := RLProtocol.DEFAULT_MAX_SPEED
var max_rotation := deg_to_rad(RLProtocol.DEFAULT_MAX_ROTATION_SPEED)
var snap_turning := false
var snap_angle := deg_to_rad(DEFAULT_SNAP_ANGLE)

## Layers the sensor rays see; -1 until configure() (then the body's own collision_mask is used).
var _sensor_mask := -1
var _excluded: Array[RID] = []
var _exceptions: Array[RID] = []
var _ray_query := PhysicsRayQueryParameters3D.new()
var _shape_query := PhysicsShapeQueryParameters3D.new()
var _contact_shape := CapsuleShape3D.new()
var _goal_shape := CapsuleShape3D.new()
var _body_centre := Vector3.ZERO
var _goal_marker := MeshInstance3D.new()
# per action
var _frozen := false
var _collisions := 0
var _fell := false
var _goal_reached := false
var _teleports := 0
# per episode
var _yaw_rate := 0.0
var _cooldown := 0
var _contacts := {}
var _phase := 0.0
var _roll := 0.0
var _pitch := 0.0
var _previous_camera := Transform3D()
var _previous_left := Vector3.ZERO
var _previous_right := Vector3.ZERO
var _camera_velocity := Vector3.ZERO
var _angular_velocity := Vector3.ZERO
var _left_velocity := Vector3.ZERO
var _right_velocity := Vector3.ZERO


## Call before adding the agent to the tree. Agents live on `agent_layer` (1-32) and see only
## `world_mask`, so they pass through each other; `excluded` colliders (the scene's own player rig)
## are invisible to them.
## `sensor_mask` adds layers only the sensor rays see (e.g. invisible colliders on drop-off edges).
func configure(
	world_mask: int, agent_layer: int, sensor_mask: int, excluded: Array[CollisionObject3D]
) -> void:
	collision_layer = 1 << (agent_layer - 1)
	collision_mask = world_mask & ~collision_layer
	_sensor_mask = (world_mask | sensor_mask) & ~collision_layer
	_excluded.clear()
	_exceptions.clear()
	for body in excluded:
		_excluded.append(body.get_rid())
		if body is PhysicsBody3D:
			_exceptions.append(body.get_rid())


func _ready() -> void:
	motion_mode = CharacterBody3D.MOTION_MODE_FLOATING
	for rid in _exceptions:
		PhysicsServer3D.body_add_collision_exception(get_rid(), rid)
	_excluded.append(get_rid())
	if _sensor_mask < 0:
		_sensor_mask = collision_mask
	_ray_query.collision_mask = collision_mask
	_ray_query.exclude = _excluded
	_shape_query.collision_mask = collision_mask
	_shape_query.exclude = _excluded
	var capsule := CapsuleShape3D.new()
	capsule.radius = PLAYER_RADIUS
	capsule.height = EYE_HEIGHT - STEP_HEIGHT
	_body_centre = Vector3(0.0, STEP_HEIGHT + capsule.height / 2.0, 0.0)
	var shape := CollisionShape3D.new()
	shape.shape = capsule
	shape.position = _body_centre
	add_child(shape)
	# A touch is anything within CONTACT_SLOP of the capsule (plus the margin move_and_collide keeps).
	var reach := CONTACT_SLOP + safe_margin
	_contact_shape.radius = PLAYER_RADIUS + reach
	_contact_shape.height = capsule.height + 2.0 * reach
	_goal_shape.radius = PLAYER_RADIUS + GOAL_CLEARANCE
	_goal_shape.height = capsule.height
	_build_rig()
	var marker := CylinderMesh.new()
	marker.top_radius = GOAL_RADIUS
	marker.bottom_radius = GOAL_RADIUS
	marker.height = 0.02
	_goal_marker.mesh = marker
	_goal_marker.top_level = true
	add_child(_goal_marker)


## Starts an episode at `spawn` (the yaw is drawn) with a goal `low` to `high` metres away.
## `options` holds the agent's persisted reset options (see RLEnvironment.configure).
func reset(
	rng: RandomNumberGenerator, spawn: Vector3, low: float, high: float, options: Dictionary
) -> void:
	max_speed = options.get("max_speed", RLProtocol.DEFAULT_MAX_SPEED)
	var rotation_speed: float = options.get(
		"max_rotation_speed", RLProtocol.DEFAULT_MAX_ROTATION_SPEED
	)
	max_rotation = deg_to_rad(rotation_speed)
	snap_turning = options.get("turn_mode", "smooth") == "snap"
	snap_angle = deg_to_rad(options.get("snap_angle", DEFAULT_SNAP_ANGLE))
	var yaw := rng.randf_range(-PI, PI)
	global_transform = Transform3D(Basis(Vector3.UP, yaw), spawn)
	var floor_y := _floor_height(spawn, spawn.y)
	if not is_nan(floor_y):
		global_position.y = floor_y
	velocity = Vector3.ZERO
	_yaw_rate = 0.0
	_cooldown = 0
	_phase = 0.0
	_roll = 0.0
	_pitch = 0.0
	if animate_body:
		_pose_body()
	start_episode(_place_goal(rng, low, high))


## Starts an episode from where the player stands, towards `goal_position` (RLPolicy uses this in
## the game, where the game picks goals).
func start_episode(goal_position: Vector3) -> void:
	goal = goal_position
	_goal_marker.global_position = goal
	_contacts = {}
	done = false
	begin_action()
	_remember_poses()
	_camera_velocity = Vector3.ZERO
	_angular_velocity = Vector3.ZERO
	_left_velocity = Vector3.ZERO
	_right_velocity = Vector3.ZERO
	observation = _observe()


## Clears the per-action events; a done agent stays frozen through the coming action.
func begin_action() -> void:
	_frozen = done
	_collisions = 0
	_fell = false
	_goal_reached = false
	_teleports = 0


## One physics frame of 1/PHYSICS_HZ s under `action` ([h, v, r], each already in [-1, 1]).
func physics_tick(action: Vector3) -> void:
	if done:
		return
	if snap_turning:
		_yaw_rate = 0.0
		if absf(action.z) > SNAP_THRESHOLD and _cooldown <= 0:
			_turn(-signf(action.z) * snap_angle, true)
			_teleports += 1
			_cooldown = SNAP_COOLDOWN_FRAMES
		_cooldown -= 1
	else:
		_yaw_rate = -action.z * max_rotation
		_turn(_yaw_rate * DT, false)
	var heading := _heading()
	var stick := Vector2(action.x, action.y).limit_length(1.0)
	var target := (heading.x * stick.x - heading.z * stick.y) * max_speed
	var start_velocity := velocity
	velocity += (target - velocity).limit_length(MAX_ACCELERATION * DT)
	_slide(velocity * DT)
	_count_contacts()
	var floor_y := _floor_height(global_position, global_position.y)
	if is_nan(floor_y):
		_fell = true
		_finish()
		return
	global_position.y = floor_y
	if _horizontal(goal - global_position).length() < GOAL_RADIUS:
		_goal_reached = true
		_finish()
		return
	if animate_body:
		_animate((velocity - start_velocity).dot(-heading.z) / DT)
	_measure_velocities()


## Refreshes the observation after an action (a frozen agent keeps its last one).
func end_action() -> void:
	if not _frozen:
		observation = _observe()


func events() -> Dictionary:
	return {
		"collisions": _collisions,
		"fell": _fell,
		"goal_reached": _goal_reached,
		"teleports": _teleports,
	}


# ---------------------------------------------------------------- motion


func _finish() -> void:
	done = true
	velocity = Vector3.ZERO
	_camera_velocity = Vector3.ZERO
	_angular_velocity = Vector3.ZERO
	_left_velocity = Vector3.ZERO
	_right_velocity = Vector3.ZERO


## Turns the player about the vertical through the head by `angle` (positive: left). A snap turn
## is a teleport: the remembered poses turn with it, so it shows in no velocity.
func _turn(angle: float, teleport: bool) -> void:
	var pivot := camera.global_position
	pivot.y = global_position.y
	var rotation_about_pivot := Transform3D(Basis(Vector3.UP, angle), Vector3.ZERO)
	rotation_about_pivot.origin = pivot - rotation_about_pivot.basis * pivot
	global_transform = rotation_about_pivot * global_transform
	if teleport:
		_previous_camera = rotation_about_pivot * _previous_camera
		_previous_left = rotation_about_pivot * _previous_left
		_previous_right = rotation_about_pivot * _previous_right


## Moves by `motion`, sliding along what it hits; velocity loses its component into the obstacle.
func _slide(motion: Vector3) -> void:
	var remaining := motion
	for _attempt in MAX_SLIDES:
		if remaining.length_squared() < 1e-12:
			return
		var collision := move_and_collide(remaining)
		if collision == null:
			return
		var normal := _horizontal(collision.get_normal())
		if normal.length_squared() < 1e-12:
			return
		normal = normal.normalized()
		remaining = collision.get_remainder().slide(normal)
		velocity -= normal * minf(velocity.dot(normal), 0.0)


## Counts each collider shape the player starts touching (a rising edge), like the simulator.
func _count_contacts() -> void:
	_shape_query.shape = _contact_shape
	_shape_query.transform = Transform3D(Basis(), global_position + _body_centre)
	var space := get_world_3d().direct_space_state
	var touching := {}
	for hit: Dictionary in space.intersect_shape(_shape_query, MAX_CONTACTS):
		touching["%d/%d" % [hit["collider_id"], hit["shape"]]] = true
	for key: String in touching:
		if not _contacts.has(key):
			_collisions += 1
	_contacts = touching


## Height of the walkable floor under `point` within STEP_HEIGHT of `reference_y`, or NAN.
func _floor_height(point: Vector3, reference_y: float) -> float:
	return _floor_between(point, reference_y + STEP_HEIGHT, reference_y - STEP_HEIGHT)


func _floor_between(point: Vector3, top: float, bottom: float) -> float:
	_ray_query.from = Vector3(point.x, top, point.z)
	_ray_query.to = Vector3(point.x, bottom, point.z)
	var hit := get_world_3d().direct_space_state.intersect_ray(_ray_query)
	if hit.is_empty():
		return NAN
	var normal: Vector3 = hit["normal"]
	var position_hit: Vector3 = hit["position"]
	return position_hit.y if normal.y >= FLOOR_MIN_NORMAL_Y else NAN


## The player's horizontal frame: x right, y up, z back, turned with the head's yaw.
func _heading() -> Basis:
	var forward := _horizontal(-camera.global_basis.z)
	if forward.length_squared() < 1e-8:
		forward = _horizontal(-global_basis.z)
	forward = forward.normalized()
	return Basis(forward.cross(Vector3.UP), Vector3.UP, -forward)


static func _horizontal(vector: Vector3) -> Vector3:
	return Vector3(vector.x, 0.0, vector.z)


# ---------------------------------------------------------------- goal


## A goal `low`-`high` m away on walkable floor, clear of solids and of drop-off edges, and on the
## navigation mesh's path from here when the scene has one. Falls back to straight ahead.
func _place_goal(rng: RandomNumberGenerator, low: float, high: float) -> Vector3:
	var start := global_position
	for _attempt in GOAL_ATTEMPTS:
		var distance := rng.randf_range(low, high)
		var angle := rng.randf() * TAU
		var candidate := start + Vector3(cos(angle), 0.0, sin(angle)) * distance
		var floor_y := _floor_between(candidate, start.y + GOAL_MAX_CLIMB, start.y - GOAL_MAX_CLIMB)
		if is_nan(floor_y):
			continue
		candidate.y = floor_y
		if _goal_is_clear(candidate) and _navigable(start, candidate):
			return candidate
	push_warning("spacetime-rl: %s found no clear goal %.1f-%.1f m away" % [name, low, high])
	return start + _heading() * Vector3(0.0, 0.0, -(low + high) / 2.0)


func _goal_is_clear(candidate: Vector3) -> bool:
	for side in [Vector3.LEFT, Vector3.RIGHT, Vector3.FORWARD, Vector3.BACK]:
		var rim: Vector3 = candidate + side * (PLAYER_RADIUS + GOAL_CLEARANCE)
		if is_nan(_floor_height(rim, candidate.y)):
			return false
	_shape_query.shape = _goal_shape
	_shape_query.transform = Transform3D(Basis(), candidate + _body_centre)
	return get_world_3d().direct_space_state.intersect_shape(_shape_query, 1).is_empty()


func _navigable(start: Vector3, candidate: Vector3) -> bool:
	var map := get_world_3d().navigation_map
	if NavigationServer3D.map_get_iteration_id(map) == 0:
		return true
	if NavigationServer3D.map_get_regions(map).is_empty():
		return true
	var path := NavigationServer3D.map_get_path(map, start, candidate, true)
	return not path.is_empty() and _horizontal(path[-1] - candidate).length() < GOAL_RADIUS


# ---------------------------------------------------------------- sensing


func _observe() -> PackedFloat32Array:
	var values := PackedFloat32Array()
	var head := camera.global_transform
	_append(values, head.origin)
	var rotation_quaternion := head.basis.orthonormalized().get_rotation_quaternion()
	if rotation_quaternion.w < 0.0:
		rotation_quaternion = -rotation_quaternion
	_append(values, Vector3(rotation_quaternion.x, rotation_quaternion.y, rotation_quaternion.z))
	values.append(rotation_quaternion.w)
	_append(values, _camera_velocity)
	_append(values, _angular_velocity)
	values.append_array(_ray_distances())
	_append(values, left_controller.global_position)
	_append(values, right_controller.global_position)
	_append(values, _left_velocity)
	_append(values, _right_velocity)
	var to_goal := goal - global_position
	var distance := to_goal.length()
	_append(values, to_goal)
	values.append(distance)
	_append(values, to_goal / distance if distance > 0.0 else Vector3.ZERO)
	for i in values.size():
		if not is_finite(values[i]):
			values[i] = 0.0
	return values


## Distance along 16 horizontal rays from the player's centre at chest height to the first solid
## or drop-off edge: ray 0 straight ahead, then clockwise seen from above every 22.5 degrees.
func _ray_distances() -> PackedFloat32Array:
	var distances := PackedFloat32Array()
	var heading := _heading()
	var start := global_position + Vector3(0.0, RAY_HEIGHT, 0.0)
	var space := get_world_3d().direct_space_state
	for k in RLProtocol.NUM_RAYS:
		var direction := (
			heading * Vector3.FORWARD.rotated(Vector3.UP, -k * TAU / RLProtocol.NUM_RAYS)
		)
		_ray_query.from = start
		_ray_query.to = start + direction * RLProtocol.RAY_RANGE
		_ray_query.collision_mask = _sensor_mask
		var hit := space.intersect_ray(_ray_query)
		_ray_query.collision_mask = collision_mask
		var distance := RLProtocol.RAY_RANGE
		if not hit.is_empty():
			distance = start.distance_to(hit["position"])
		distances.append(_drop_distance(direction, distance))
	return distances


## Where the floor first drops away (or ends) along `direction`, up to `limit` metres.
func _drop_distance(direction: Vector3, limit: float) -> float:
	var floor_y := global_position.y
	var walked := 0.0
	var probe := minf(PROBE_SPACING, limit)
	while probe > walked:
		var probe_y := _floor_height(global_position + direction * probe, floor_y)
		if is_nan(probe_y):
			var low := walked
			var high := probe
			for _i in PROBE_REFINEMENTS:
				var middle := (low + high) / 2.0
				if is_nan(_floor_height(global_position + direction * middle, floor_y)):
					high = middle
				else:
					low = middle
			return (low + high) / 2.0
		floor_y = probe_y
		walked = probe
		probe = minf(probe + PROBE_SPACING, limit)
	return limit


## Velocities over the last physics frame, from the poses of the camera and the controllers.
func _measure_velocities() -> void:
	var head := camera.global_transform
	_camera_velocity = (head.origin - _previous_camera.origin) / DT
	var turn := head.basis.orthonormalized() * _previous_camera.basis.orthonormalized().inverse()
	var spin := turn.get_rotation_quaternion()
	if spin.w < 0.0:
		spin = -spin
	var angle := spin.get_angle()
	_angular_velocity = spin.get_axis() * angle / DT if angle > 1e-9 else Vector3.ZERO
	_left_velocity = (left_controller.global_position - _previous_left) / DT
	_right_velocity = (right_controller.global_position - _previous_right) / DT
	_remember_poses()


func _remember_poses() -> void:
	_previous_camera = camera.global_transform
	_previous_left = left_controller.global_position
	_previous_right = right_controller.global_position


static func _append(values: PackedFloat32Array, vector: Vector3) -> void:
	values.append(vector.x)
	values.append(vector.y)
	values.append(vector.z)


# ---------------------------------------------------------------- rig and synthetic body motion


## Advances the walking phase and the low-passed lean, then poses head and hands (world.py's
## _finish_action and _observations, per frame instead of per action).
func _animate(forward_acceleration: float) -> void:
	var speed := _horizontal(velocity).length()
	_phase = fmod(_phase + TAU * speed * DT / STRIDE_LENGTH, TAU)
	var walk := minf(speed / WALK_REFERENCE_SPEED, 1.0)
	var roll_target := ROLL_PER_YAW_RATE * _yaw_rate + ROLL_SWAY * walk * sin(_phase)
	var pitch_target := -PITCH_PER_ACCELERATION * forward_acceleration
	var keep := exp(-DT / SWAY_TIME_CONSTANT)
	_roll = roll_target + (_roll - roll_target) * keep
	_pitch = pitch_target + (_pitch - pitch_target) * keep
	_pose_body()


func _pose_body() -> void:
	var walk := minf(_horizontal(velocity).length() / WALK_REFERENCE_SPEED, 1.0)
	var bob := BOB_AMPLITUDE * walk * sin(2.0 * _phase)
	camera.transform = Transform3D(
		Basis.from_euler(Vector3(_pitch, 0.0, _roll)), Vector3(0.0, EYE_HEIGHT + bob, 0.0)
	)
	var swing := Vector3(0.0, 0.0, HAND_SWING * walk * sin(_phase))
	left_controller.position = LEFT_HAND_OFFSET + swing
	right_controller.position = RIGHT_HAND_OFFSET - swing


## Uses the XROrigin3D child and its camera and controllers when present, else builds them.
func _build_rig() -> void:
	for child in get_children():
		if child is XROrigin3D:
			origin = child as XROrigin3D
	if origin == null:
		origin = XROrigin3D.new()
		origin.name = "XROrigin3D"
		add_child(origin)
	for child in origin.get_children():
		var controller := child as XRController3D
		if child is XRCamera3D:
			camera = child as XRCamera3D
		elif controller != null and controller.tracker == &"left_hand":
			left_controller = controller
		elif controller != null and controller.tracker == &"right_hand":
			right_controller = controller
	if camera == null:
		camera = XRCamera3D.new()
		camera.name = "XRCamera3D"
		camera.position = Vector3(0.0, EYE_HEIGHT, 0.0)
		origin.add_child(camera)
	if left_controller == null:
		left_controller = _new_controller("LeftController", &"left_hand", LEFT_HAND_OFFSET)
	if right_controller == null:
		right_controller = _new_controller("RightController", &"right_hand", RIGHT_HAND_OFFSET)


func _new_controller(node_name: String, tracker: StringName, offset: Vector3) -> XRController3D:
	var controller := XRController3D.new()
	controller.name = node_name
	controller.tracker = tracker
	controller.position = offset
	origin.add_child(controller)
	return controller
