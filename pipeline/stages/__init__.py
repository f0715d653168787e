"""The stages: thin handlers that bind a technique to the run. Each module holds one config
dataclass and one handler registered with `register_stage`; pyproject.toml names the module as an
`edgepipe.stages` entry point, so a recipe finds it without the core importing it.

A config declares `uses_data`, `inputs(available) -> {config key: artifact name}` and
`outputs() -> {artifact name: kind}`; the recipe loader checks the wiring before anything runs.
"""
