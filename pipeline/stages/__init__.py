"""Built-in stages. Each module holds one config dataclass and one registered handler.

A config declares `uses_data`, `inputs(available) -> {config key: artifact name}` and
`outputs() -> {artifact name: kind}`; the recipe loader checks the wiring before anything runs.
"""
