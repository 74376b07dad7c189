@tool
extends EditorPlugin
## Registers the `SpacetimeRL` autoload (the protocol v1 HTTP server) while the plugin is enabled.

const AUTOLOAD_NAME := "SpacetimeRL"
const AUTOLOAD_PATH := "res://addons/spacetime_rl/rl_service.gd"


func _enable_plugin() -> void:
	add_autoload_singleton(AUTOLOAD_NAME, AUTOLOAD_PATH)


func _disable_plugin() -> void:
	remove_autoload_singleton(AUTOLOAD_NAME)
