"""A tiny flow for the GPU-limit test: `renders` tasks tagged `gpu` (like lipsync-<lang>), each holding its slot."""

import time

from prefect import flow, task


@task(tags=["gpu"], task_run_name="render-{index}")
def render(index: int, seconds: float) -> int:
    time.sleep(seconds)
    return index


@flow(name="gpu-probe")
def gpu_probe(renders: int = 3, seconds: float = 1.0) -> list[int]:
    return [f.result() for f in [render.submit(i, seconds) for i in range(renders)]]
