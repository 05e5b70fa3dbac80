// RunnerApi: the runner's HTTP+JSON API, served by ServiceServer.
//   GET    /healthz                      liveness
//   GET    /metrics                      Prometheus text
//   GET    /v1/pools                     per pool: counts by state, min, max, isolation
//   GET    /v1/machines                  every machine
//   POST   /v1/machines                  {"pool", "gitspace_id"}: a machine for a Gitspace
//   GET    /v1/machines/{id}             one machine, with the tail of its boot log
//   POST   /v1/machines/{id}/stop|start
//   DELETE /v1/machines/{id}?keep_storage=true|false
// With a token configured, every call but /healthz over TCP needs
// `Authorization: Bearer <token>`; the unix socket is guarded by its mode.
#pragma once

#include <memory>
#include <string>

#include "runner/pool_manager.h"
#include "service/service_server.h"

namespace spacegate {

class RunnerApi : public ServiceHandler {
 public:
  RunnerApi(PoolManager& pools, std::string token) : pools_(pools), token_(std::move(token)) {}

  void handle(ServiceRequest request, std::shared_ptr<ServiceExchange> exchange) override;
  // The same, sans-IO (unit tests).
  ServiceResponse answer(const ServiceRequest& request);

 private:
  ServiceResponse machineCollection(const ServiceRequest& request);
  ServiceResponse machine(const ServiceRequest& request, const std::string& id,
                          const std::string& action);

  PoolManager& pools_;
  std::string token_;
};

}  // namespace spacegate
