// route: read queries from stdin (one per line), print the chosen model per line.
//
//   route POLICY.pt [COST_WEIGHT]
//
// Loads a routerl policy (docs/contracts.md §2) with libtorch and calls its scripted
// `route(List[str], float) -> List[str]` method; the featurizer is inside the file, so the
// decisions are exactly Python's. COST_WEIGHT defaults to the policy's default_cost_weight().
// Queries are routed in batches of up to 256 lines. Exit status: 0 ok, 2 bad arguments or
// policy file, 1 other errors.

#include <torch/script.h>

#include <cmath>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

namespace {

constexpr std::size_t kBatch = 256;

// Route one batch and print one model name per query.
void route_batch(torch::jit::Method& route, const std::vector<std::string>& lines, double weight) {
  c10::List<std::string> queries;
  queries.reserve(lines.size());
  for (const auto& line : lines) queries.push_back(line);
  const c10::IValue out = route({queries, weight});
  for (const auto& model : out.toListRef()) std::cout << model.toStringRef() << '\n';
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::cerr << "usage: route POLICY.pt [COST_WEIGHT] < queries.txt\n";
    return 2;
  }
  torch::jit::Module policy;
  try {
    policy = torch::jit::load(argv[1], torch::kCPU);
  } catch (const c10::Error& error) {
    std::cerr << "route: error: cannot load policy " << argv[1] << ": "
              << error.what_without_backtrace() << '\n';
    return 2;
  }
  double weight = policy.get_method("default_cost_weight")({}).toDouble();
  if (argc == 3) {
    char* end = nullptr;
    weight = std::strtod(argv[2], &end);
    if (end == argv[2] || *end != '\0' || !std::isfinite(weight) || weight < 0) {
      std::cerr << "route: error: COST_WEIGHT must be a finite number >= 0, got " << argv[2] << '\n';
      return 2;
    }
  }
  try {
    c10::InferenceMode guard;
    torch::jit::Method route = policy.get_method("route");
    std::vector<std::string> lines;
    std::string line;
    while (std::getline(std::cin, line)) {
      lines.push_back(line);
      if (lines.size() == kBatch) {
        route_batch(route, lines, weight);
        lines.clear();
      }
    }
    if (!lines.empty()) route_batch(route, lines, weight);
  } catch (const c10::Error& error) {
    std::cerr << "route: error: " << error.what_without_backtrace() << '\n';
    return 1;
  }
  std::cout.flush();
  return 0;
}
