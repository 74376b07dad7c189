class_name RLProtocol
extends RefCounted
## Constants of HTTP protocol v1, copied from spacetime_rl/protocol/wire.py (the source of truth).
##
## tests/unit/test_gdscript.py checks that these values still equal wire.py's.
## Axes follow Godot: +Y up, -Z forward, +X right. Units: metres, seconds, radians.

const PROTOCOL_VERSION := 1
const DEFAULT_HOST := "127.0.0.1"
const DEFAULT_PORT := 8080
const DEFAULT_SCENE := "res://scenes/features/vr_locomotion_test.tscn"
const MAX_AGENTS := 4096
## Largest reset seed: exact in a double, as JSON numbers are read.
const MAX_SEED := 9007199254740991

## [name, size] in wire order; sizes add up to OBSERVATION_SIZE.
const OBSERVATION_FIELDS := [
	["camera_position", 3],
	["camera_rotation", 4],
	["camera_velocity", 3],
	["camera_angular_velocity", 3],
	["ray_distances", 16],
	["left_controller_position", 3],
	["right_controller_position", 3],
	["left_controller_velocity", 3],
	["right_controller_velocity", 3],
	["goal_relative_position", 3],
	["goal_distance", 1],
	["goal_direction", 3],
]
const OBSERVATION_SIZE := 48
const ACTION_SIZE := 3
const NUM_RAYS := 16
const RAY_RANGE := 5.0

const PHYSICS_HZ := 90
const DEFAULT_ACTION_REPEAT := 9

const DEFAULT_MAX_SPEED := 2.0
const DEFAULT_MAX_ROTATION_SPEED := 90.0

const EVENT_FIELDS := ["collisions", "fell", "goal_reached", "teleports"]

## Values of the optional `scenario` reset option; the first is the default (the scene as built).
const SCENARIOS := ["open_field", "obstacle_course", "maze"]
const DEFAULT_SCENARIO := "open_field"


## Start index of the named observation field.
static func offset_of(field_name: String) -> int:
	var start := 0
	for field: Array in OBSERVATION_FIELDS:
		if field[0] == field_name:
			return start
		start += field[1]
	push_error("unknown observation field %s" % field_name)
	return -1


## The layout as /rl/spec reports it: [{name, size}, ...].
static func observation_fields_json() -> Array:
	var fields := []
	for field: Array in OBSERVATION_FIELDS:
		fields.append({"name": field[0], "size": field[1]})
	return fields
