"""robolearn's MuJoCo task suite (placeholder until the task-suite issue lands)."""


def register_all() -> None:
    pass
