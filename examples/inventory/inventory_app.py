"""A servicer and a client of inventory.v1, written the way a user writes them.

The test suite generates the code (``gen/``) and runs ``mypy --strict`` on this
file with message stubs from protoc's ``--pyi_out`` and from mypy-protobuf's
``--mypy_out``, then runs ``main()``: a server on a free loopback port and
both clients calling it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from inventory.v1.inventory_localfirst import (
    InventoryServiceClient,
    InventoryServiceServicer,
    InventoryServiceSyncClient,
    start_server,
)
from inventory.v1.inventory_pb2 import (
    ZONE_COLD,
    ZONE_DRY,
    AdjustRequest,
    AdjustResponse,
    GetItemRequest,
    GetItemResponse,
    Item,
    WatchRequest,
    WatchResponse,
    Zone,
)

from protoc_gen_localfirst import runtime as lf


class Inventory(InventoryServiceServicer):
    def __init__(self) -> None:
        self.items: dict[str, Item] = {}

    async def GetItem(
        self, request: GetItemRequest, context: lf.ServicerContext[GetItemRequest, GetItemResponse]
    ) -> GetItemResponse:
        return GetItemResponse(item=self.items.get(request.sku) or Item(sku=request.sku))

    async def Adjust(
        self, request: AdjustRequest, context: lf.ServicerContext[AdjustRequest, AdjustResponse]
    ) -> AdjustResponse:
        zone = request.zone if request.HasField("zone") else ZONE_DRY
        reply = AdjustResponse()
        for sku, delta in sorted(request.deltas.items()):
            item = self.items.setdefault(sku, Item(sku=sku, zone=zone))
            item.count += delta
            item.shelf.aisle = item.shelf.aisle or sku[:1].upper()
            item.labels["adjusted"] = "yes"
            reply.items.append(item)
        return reply

    async def Watch(
        self, request: WatchRequest, context: lf.ServicerContext[WatchRequest, WatchResponse]
    ) -> AsyncIterator[WatchResponse]:
        for item in list(self.items.values()):
            if not request.zones or item.zone in request.zones:
                yield WatchResponse(item=item)


def describe(item: Item) -> str:
    counted = item.last_counted_unix if item.HasField("last_counted_unix") else None
    labels = ",".join(f"{k}={v}" for k, v in sorted(item.labels.items()))
    return (
        f"{item.sku} x{item.count} in {Zone.Name(item.zone)} at {item.shelf.aisle}{item.shelf.level}"
        f" [{labels}] counted={counted}"
    )


async def main() -> list[str]:
    server = await start_server(Inventory(), host="127.0.0.1", port=0, node="node-a")
    target = f"static:///127.0.0.1:{server.port}@node-a"
    lines: list[str] = []
    try:
        async with InventoryServiceClient(target, node="node-a") as client:
            adjusted = await client.adjust(
                AdjustRequest(deltas={"milk": 3, "flour": 5}, zone=ZONE_COLD), timeout=5.0
            )
            lines += [describe(item) for item in adjusted.items]
            async for change in client.watch(WatchRequest(zones=[ZONE_COLD])):
                lines.append("watch " + change.item.sku)

        def read_sync() -> Item:
            with InventoryServiceSyncClient(target, node="node-a") as sync:
                return sync.get_item(GetItemRequest(sku="milk"), timeout=5.0).item

        lines.append("sync " + describe(await asyncio.to_thread(read_sync)))
    finally:
        await server.stop()
    return lines


if __name__ == "__main__":
    print("\n".join(asyncio.run(main())))
