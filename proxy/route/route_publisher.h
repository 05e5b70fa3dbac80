// The route table's publisher and per-worker reader (see
// common/snapshot_publisher.h): workers take a new table from their next
// request on; exchanges in flight keep theirs.
#pragma once

#include "common/snapshot_publisher.h"
#include "route/route_table.h"

namespace spacegate {

using RouteTablePublisher = SnapshotPublisher<RouteTable>;
using RouteTableReader = SnapshotReader<RouteTable>;

}  // namespace spacegate
