"""The README's example: a routine written in Python, a flow in YAML, run in-process."""

import anyio

from routilux import Engine, Entry, Routine, default_registry
from routilux.engine.dsl import load_flow


class Shout(Routine):
    """Upper-cases text and adds an exclamation mark."""

    slots = ["input"]
    events = ["output"]

    async def logic(self, ctx, input):
        for item in input:
            await ctx.emit("output", data=str(item["data"]).upper() + "!")


FLOW = """
flow_id: hello
routines:
  shout: {class: Shout}
  keep:  {class: DataSink}
connections:
  - {from: shout.output, to: keep.input}
"""


async def main() -> list:
    registry = default_registry()
    registry.register(Shout)
    async with Engine(registry=registry) as engine:
        job = await engine.start_job(
            load_flow(FLOW), entries=[Entry("shout", "input", "hello")], complete_when_idle=True
        )
        await job.wait()
        return [item["data"] for item in job.shared_data["results"]["keep"]]


if __name__ == "__main__":
    print(anyio.run(main))  # ['HELLO!']
