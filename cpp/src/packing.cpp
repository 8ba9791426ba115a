#include "gpualloc/packing.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <functional>
#include <iterator>
#include <limits>
#include <map>
#include <numeric>

namespace gpualloc {

// Per-thread buffers of one search, reached once per find() (a thread_local looked up in every
// per-node call costs a __tls_get_addr each time in the shared module).
struct Packer::Scratch {
  struct Cand {
    double pen;
    int shared;
    int gpu;
    int domain;
  };
  struct Dom {
    std::int64_t cap;
    int node;
    int nvlink;
  };
  std::vector<Cand> cands;
  std::vector<int> domains, take;
  std::vector<std::pair<Score, int>> top;
  Replica best_rep, cand_rep;
  std::vector<int> restricted, only_gpus, one = std::vector<int>(1), seen;
  std::vector<Replica> cand;
  std::vector<Dom> doms;
  std::vector<std::pair<std::int64_t, std::size_t>> groups;  // (free capacity, group)
};

// Out of line, so that the compiler does not specialise the callees for the thread_local's
// address (which brings the per-call lookups back).
[[gnu::noinline]] Packer::Scratch& Packer::scratch() {
  thread_local Scratch tmp;
  return tmp;
}

Packer::Packer(const ProblemData& p, const Workload* workload, double fragment_scale,
               const std::vector<int>* node_order, Packing packing,
               const PatternValues* pattern_values, double reserve_weight)
    : p_(p), fragment_scale_(fragment_scale), packing_(packing), reserve_weight_(reserve_weight) {
  if (workload != nullptr) node_workload_ = *workload;
  if (pattern()) {
    if (pattern_values != nullptr) pattern_values_ = *pattern_values;
    if (!node_workload_.empty()) {
      need_ = typical_need(node_workload_);
    } else {  // the round's GPU bids, weighted by replicas
      double cpu = 0, memory = 0, gpus = 0;
      for (const auto& a : p.alternatives) {
        if (a.kind == UnitKind::Mig) continue;
        cpu += static_cast<double>(a.replicas) * static_cast<double>(a.cpu_milli);
        memory += static_cast<double>(a.replicas) * static_cast<double>(a.memory_mib);
        gpus += a.replicas * (a.kind == UnitKind::Whole ? a.gpus : a.milli / 1000.0);
      }
      if (gpus > 0) need_ = {cpu / gpus, memory / gpus};
    }
  }
  rank_nodes(node_order);
  index_topology();
  group_nodes();
  tabulate_policies();
}

void Packer::rank_nodes(const std::vector<int>* node_order) {
  // Preference among placements in one fragmentation step: a fixed order of the nodes (the
  // given one, else a hash of the index), as fractions in [0, 1) added to the step number.
  const std::size_t nn = p_.nodes.size();
  node_tie_.assign(nn, 0.0);
  if (node_order != nullptr && node_order->size() == nn) {
    for (std::size_t k = 0; k < nn; ++k) {
      node_tie_[(*node_order)[k]] = static_cast<double>(k) / static_cast<double>(nn + 1);
    }
    return;
  }
  std::vector<std::pair<std::uint64_t, int>> h(nn);
  for (std::size_t n = 0; n < nn; ++n) {
    std::uint64_t x = n + 0x9e3779b97f4a7c15ULL;  // splitmix64
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    h[n] = {x ^ (x >> 31), static_cast<int>(n)};
  }
  std::sort(h.begin(), h.end());
  for (std::size_t k = 0; k < nn; ++k) {
    node_tie_[h[k].second] = static_cast<double>(k) / static_cast<double>(nn + 1);
  }
}

void Packer::index_topology() {
  const auto& p = p_;
  const std::size_t n_nodes = p.nodes.size();
  const std::size_t n_models = p.models.size();
  node_gpus_.resize(n_nodes);
  model_gpus_.resize(n_models);
  model_nodes_.resize(n_models);
  int max_nvlink = -1;
  for (std::size_t g = 0; g < p.gpus.size(); ++g) {
    node_gpus_[p.gpus[g].node].push_back(static_cast<int>(g));
    model_gpus_[p.gpus[g].model].push_back(static_cast<int>(g));
    max_nvlink = std::max(max_nvlink, p.gpus[g].nvlink);
  }
  node_has_model_.assign(n_nodes * n_models, 0);
  for (const auto& g : p.gpus) {
    node_has_model_[static_cast<std::size_t>(g.node) * n_models +
                    static_cast<std::size_t>(g.model)] = 1;
  }
  single_model_.assign(n_nodes, 1);
  for (std::size_t n = 0; n < n_nodes; ++n) {
    for (int g : node_gpus_[n]) {
      if (p.gpus[g].model != p.gpus[node_gpus_[n][0]].model) single_model_[n] = 0;
    }
  }
  model_alone_.assign(n_models, 1);
  for (std::size_t n = 0; n < n_nodes; ++n) {
    if (single_model_[n]) continue;
    for (int g : node_gpus_[n]) model_alone_[p.gpus[g].model] = 0;
  }
  nvlink_node_.assign(static_cast<std::size_t>(max_nvlink + 1), -1);
  for (const auto& g : p.gpus) nvlink_node_[g.nvlink] = g.node;
  for (std::size_t m = 0; m < n_models; ++m) {
    int last = -1;
    for (int g : model_gpus_[m]) {
      if (p.gpus[g].node != last) {
        last = p.gpus[g].node;
        if (model_nodes_[m].empty() || model_nodes_[m].back() != last)
          model_nodes_[m].push_back(last);
      }
    }
    std::sort(model_nodes_[m].begin(), model_nodes_[m].end());
    model_nodes_[m].erase(std::unique(model_nodes_[m].begin(), model_nodes_[m].end()),
                          model_nodes_[m].end());
  }
}

void Packer::group_nodes() {
  const auto& p = p_;
  const std::size_t n_nodes = p.nodes.size();
  const std::size_t n_models = p.models.size();
  int max_rack = -1, max_zone = -1;
  const auto groups_by = [&](auto key) {
    std::vector<std::vector<std::vector<int>>> out(n_models);
    for (std::size_t m = 0; m < n_models; ++m) {
      std::map<int, std::vector<int>> by;
      for (int n : model_nodes_[m]) {
        if (key(n) >= 0) {
          by[key(n)].push_back(n);
        } else {
          out[m].push_back({n});  // a node without a rack (zone) is a rack (zone) of its own
        }
      }
      for (auto& [k, v] : by) out[m].push_back(std::move(v));
    }
    return out;
  };
  rack_model_nodes_ = groups_by([&](int n) { return p.nodes[n].rack; });
  zone_model_nodes_ = groups_by([&](int n) { return p.nodes[n].zone; });
  const auto index_groups = [&](const std::vector<std::vector<std::vector<int>>>& groups) {
    std::vector<std::vector<int>> of(n_models, std::vector<int>(n_nodes, -1));
    for (std::size_t m = 0; m < n_models; ++m) {
      for (std::size_t g = 0; g < groups[m].size(); ++g) {
        for (int n : groups[m][g]) of[m][n] = static_cast<int>(g);
      }
    }
    return of;
  };
  rack_group_of_ = index_groups(rack_model_nodes_);
  zone_group_of_ = index_groups(zone_model_nodes_);
  for (const auto& n : p.nodes) {
    max_rack = std::max(max_rack, n.rack);
    max_zone = std::max(max_zone, n.zone);
  }
  rack_nodes_.resize(static_cast<std::size_t>(max_rack + 1));
  zone_nodes_.resize(static_cast<std::size_t>(max_zone + 1));
  for (std::size_t n = 0; n < n_nodes; ++n) {
    if (p.nodes[n].rack >= 0) rack_nodes_[p.nodes[n].rack].push_back(static_cast<int>(n));
    if (p.nodes[n].zone >= 0) zone_nodes_[p.nodes[n].zone].push_back(static_cast<int>(n));
    all_nodes_.push_back(static_cast<int>(n));
  }
}

void Packer::tabulate_policies() {
  const auto& p = p_;
  const std::size_t n_models = p.models.size();
  // Demand mix of the round, weighted by replicas: shares by size, whole GPUs as 1000. Its FGD
  // fragmentation of a single GPU with f milli free (no CPU limit) is tabulated once.
  std::map<int, double> share_demand;
  std::vector<std::vector<double>> mig_demand(n_models);
  for (std::size_t m = 0; m < n_models; ++m) mig_demand[m].assign(p.models[m].profiles.size(), 0.0);
  for (const auto& a : p.alternatives) {
    if (a.kind == UnitKind::Share) {
      share_demand[a.milli] += a.replicas;
    } else if (a.kind == UnitKind::Whole) {
      share_demand[1000] += a.replicas;
    } else {
      for (std::size_t i = 0; i < a.models.size(); ++i) {
        if (a.profiles[i] >= 0) mig_demand[a.models[i]][a.profiles[i]] += a.replicas;
      }
    }
  }
  share_fragment_.assign(1001, 0.0);
  if (!share_demand.empty()) {
    std::vector<Workload::Task> single;
    for (const auto& [milli, w] : share_demand) single.push_back({0, 1, milli, 0, w});
    const Workload mix(std::move(single));
    const int model0 = 0;
    for (int f = 0; f <= 1000; ++f) {
      share_fragment_[f] =
          mix.node_fragment(&f, &model0, 1, std::numeric_limits<std::int64_t>::max());
    }
  }
  mig_potential_.resize(n_models);
  for (std::size_t m = 0; m < n_models; ++m) {
    if (p.models[m].mig_units == 0) continue;
    tabulate_mig_potential(m, mig_demand[m]);
  }
}

void Packer::tabulate_mig_potential(std::size_t m, const std::vector<double>& demand) {
  const auto& md = p_.models[m];
  const double demand_total = std::accumulate(demand.begin(), demand.end(), 0.0);
  mig_potential_[m].assign(std::size_t{1} << md.mig_units, 0.0);
  for (std::uint32_t mask = 0; mask < (1u << md.mig_units); ++mask) {
    double pot = 0;
    std::uint32_t coverable = 0;
    for (std::size_t q = 0; q < md.profiles.size(); ++q) {
      const auto& pr = md.profiles[q];
      const double w = pr.size * (1.0 + (demand_total > 0 ? 4.0 * demand[q] / demand_total : 0.0));
      for (int st = 0; st + pr.size <= md.mig_units; ++st) {
        if (((pr.starts_mask >> st) & 1u) && !(mask & slice_bits(st, pr.size))) {
          pot += w;
          coverable |= slice_bits(st, pr.size);
        }
      }
    }
    // Free slices no legal instance can use any more are stranded: weigh them like a large
    // profile, so that e.g. a 1g does not take slot 6 next to a free slot 7 it would strand.
    const std::uint32_t full = (1u << md.mig_units) - 1u;
    const int dead = std::popcount(full & ~mask & ~coverable);
    mig_potential_[m][mask] = pot - 8.0 * dead;
  }
}

std::int64_t Packer::capacity_on(const State& s, UnitKind kind, int model, int node,
                                 int nvlink) const {
  if (nvlink < 0 && single_model_[node] && !s.node_free_whole.empty()) {
    switch (kind) {
      case UnitKind::Whole:
        return s.node_free_whole[node];
      case UnitKind::Share:
        return s.node_free_milli[node];
      case UnitKind::Mig:
        return s.node_free_slices[node];
    }
  }
  std::int64_t cap = 0;
  for (int g : node_gpus_[node]) {
    const auto& gd = p_.gpus[g];
    if (gd.model != model || (nvlink >= 0 && gd.nvlink != nvlink) || !serves(gd.mode, kind))
      continue;
    const auto& gs = s.gpus[g];
    switch (kind) {
      case UnitKind::Whole:
        cap += gs.milli == 0 ? 1 : 0;
        break;
      case UnitKind::Share:
        cap += 1000 - gs.milli;
        break;
      case UnitKind::Mig:
        cap += p_.models[model].mig_units - std::popcount(static_cast<std::uint32_t>(gs.mig_mask));
        break;
    }
  }
  return cap;
}

std::int64_t Packer::free_capacity(const State& s, UnitKind kind, int model) const {
  std::int64_t cap = 0;
  if (model < 0 || model >= static_cast<int>(model_nodes_.size())) return 0;
  for (int n : model_nodes_[model]) cap += capacity_on(s, kind, model, n, -1);
  return cap;
}

double Packer::reserve_growth(const State& s, int node, const std::vector<int>& gpus, int milli,
                              std::int64_t cpu, std::int64_t memory) const {
  double before = 0, taken = 0;
  for (int g : node_gpus_[node]) {
    const auto& gd = p_.gpus[g];
    if (gd.mode == GpuMode::Mig) continue;
    const int used = s.gpus[g].milli;
    const int f = gd.mode == GpuMode::Shared ? 1000 - used : (used == 0 ? 1000 : 0);
    before += f;
    if (std::find(gpus.begin(), gpus.end(), g) != gpus.end()) {
      taken += gd.mode == GpuMode::Shared ? milli : f;
    }
  }
  const std::int64_t cpu_free = p_.nodes[node].cpu_milli - s.cpu_used[node];
  const std::int64_t mem_free = p_.nodes[node].memory_mib - s.mem_used[node];
  return stranded_milli(before - taken, cpu_free - cpu, mem_free - memory, need_) -
         stranded_milli(before, cpu_free, mem_free, need_);
}

double Packer::node_fragment_growth(const State& s, int node, const std::vector<int>& gpus,
                                    int milli, std::int64_t cpu, std::int64_t memory) const {
  thread_local std::vector<int> free, model, after;
  free.clear();
  model.clear();
  after.clear();
  for (int g : node_gpus_[node]) {
    const auto& gd = p_.gpus[g];
    if (gd.mode == GpuMode::Mig) continue;
    const int used = s.gpus[g].milli;
    const int f = gd.mode == GpuMode::Shared ? 1000 - used : (used == 0 ? 1000 : 0);
    free.push_back(f);
    model.push_back(gd.model);
    int a = f;
    if (std::find(gpus.begin(), gpus.end(), g) != gpus.end())
      a = gd.mode == GpuMode::Shared ? f - milli : 0;
    after.push_back(a);
  }
  const std::int64_t cpu_free = p_.nodes[node].cpu_milli - s.cpu_used[node];
  const int n = static_cast<int>(free.size());
  const double growth =
      node_workload_.node_fragment(after.data(), model.data(), n, cpu_free - cpu) -
      node_workload_.node_fragment(free.data(), model.data(), n, cpu_free);
  if (!pattern()) return growth;
  return growth + reserve_weight_ * reserve_growth(s, node, gpus, milli, cpu, memory);
}

double Packer::fragment_key(double growth, int node) const {
  if (fragment_scale_ <= 0) return growth;
  // FGD's own scale: 100 sigmoid(-growth / scale), truncated to an integer as the paper's
  // plugin does, so growths a few hundredths of a GPU apart fall in one step (finer near zero).
  const double step = std::trunc(100.0 / (1.0 + std::exp(growth / fragment_scale_)));
  return -step + node_tie_[node];
}

namespace {

double penalty_of(const std::vector<double>* penalty, int g) {
  return penalty ? (*penalty)[g] : 0.0;
}

}  // namespace

bool Packer::best_on_node(const State& s, const AlternativeData& alt, int model, int profile,
                          int node, int nvlink, int only_gpu, const std::vector<double>* penalty,
                          Replica& out, Score& score, Scratch& tmp) const {
  const auto& nd = p_.nodes[node];
  if (s.cpu_used[node] + alt.cpu_milli > nd.cpu_milli) return false;
  if (s.mem_used[node] + alt.memory_mib > nd.memory_mib) return false;
  if (!s.node_free_whole.empty()) {  // nothing free on the node: no need to look at its GPUs
    if (alt.kind == UnitKind::Whole && s.node_free_whole[node] < alt.gpus) return false;
    if (alt.kind == UnitKind::Share && s.node_free_milli[node] < alt.milli) return false;
    if (alt.kind == UnitKind::Mig && s.node_free_slices[node] <= 0) return false;
  }
  bool found = false;
  Score best;
  switch (alt.kind) {
    case UnitKind::Whole:
      found = whole_on_node(s, alt, model, node, nvlink, penalty, out, best, tmp);
      break;
    case UnitKind::Share:
      found = share_on_node(s, alt, model, node, nvlink, only_gpu, penalty, out, best);
      break;
    case UnitKind::Mig:
      found = mig_on_node(s, model, profile, node, nvlink, only_gpu, penalty, out, best);
      break;
  }
  if (!found) return false;
  out.node = node;
  score = best;
  return true;
}

bool Packer::whole_on_node(const State& s, const AlternativeData& alt, int model, int node,
                           int nvlink, const std::vector<double>* penalty, Replica& out,
                           Score& best, Scratch& tmp) const {
  // Free whole-capable GPUs grouped by NVLink domain.
  using Cand = Scratch::Cand;
  auto& cands = tmp.cands;
  cands.clear();
  for (int g : node_gpus_[node]) {
    const auto& gd = p_.gpus[g];
    if (gd.model != model || gd.mode == GpuMode::Mig || s.gpus[g].milli != 0) continue;
    if (nvlink >= 0 && gd.nvlink != nvlink) continue;
    cands.push_back({penalty_of(penalty, g), gd.mode == GpuMode::Shared ? 1 : 0, g, gd.nvlink});
  }
  const int k = alt.gpus;
  if (static_cast<int>(cands.size()) < k) return false;
  std::sort(cands.begin(), cands.end(), [](const Cand& a, const Cand& b) {
    if (a.pen != b.pen) return a.pen < b.pen;
    if (a.shared != b.shared) return a.shared < b.shared;
    return a.gpu < b.gpu;
  });
  const double node_free = static_cast<double>(cands.size() - static_cast<std::size_t>(k));
  if (!whole_in_domain(s, alt, node, node_free, out, best, tmp)) {
    // Span domains (only when no NVLink restriction applies).
    if (nvlink >= 0) return false;
    out.gpus.clear();
    double pen_sum = 0;
    for (int i = 0; i < k; ++i) {
      out.gpus.push_back(cands[i].gpu);
      pen_sum += cands[i].pen;
    }
    // Spanning domains is worse than any single-domain placement of the same node.
    best = Score{pen_sum, node_free, 1e9, 0};
    if (!node_workload_.empty()) {
      best = Score{
          pen_sum,
          fragment_key(node_fragment_growth(s, node, out.gpus, 1000, alt.cpu_milli, alt.memory_mib),
                       node),
          node_free, 1e9};
    } else if (pattern()) {
      best =
          Score{pen_sum,
                pattern_key(0.0, reserve_weight_ * reserve_growth(s, node, out.gpus, 1000,
                                                                  alt.cpu_milli, alt.memory_mib)),
                node_free, 1e9};
    }
  }
  std::sort(out.gpus.begin(), out.gpus.end());
  out.kind = UnitKind::Whole;
  out.profile = -1;
  out.start = -1;
  out.milli = 0;
  return true;
}

bool Packer::whole_in_domain(const State& s, const AlternativeData& alt, int node, double node_free,
                             Replica& out, Score& best, Scratch& tmp) const {
  // Prefer one NVLink domain, the tightest that fits.
  const auto& cands = tmp.cands;
  const int k = alt.gpus;
  auto& domains = tmp.domains;
  domains.clear();
  for (const auto& c : cands) domains.push_back(c.domain);
  std::sort(domains.begin(), domains.end());
  domains.erase(std::unique(domains.begin(), domains.end()), domains.end());
  auto& take = tmp.take;
  bool found = false;
  for (int d : domains) {
    take.clear();
    double pen_sum = 0;
    int shared = 0, in_domain = 0;
    for (const auto& c : cands) {
      if (c.domain != d) continue;
      ++in_domain;
      if (static_cast<int>(take.size()) < k) {
        take.push_back(c.gpu);
        pen_sum += c.pen;
        shared += c.shared;
      }
    }
    if (static_cast<int>(take.size()) < k) continue;
    Score sc{pen_sum, node_free, static_cast<double>(in_domain - k), static_cast<double>(shared)};
    if (!node_workload_.empty()) {  // FGD first, then the tightest node and domain
      sc =
          Score{pen_sum,
                fragment_key(
                    node_fragment_growth(s, node, take, 1000, alt.cpu_milli, alt.memory_mib), node),
                node_free, static_cast<double>(in_domain - k)};
    } else if (pattern()) {  // the reserve first, then best fit
      sc = Score{pen_sum,
                 pattern_key(0.0, reserve_weight_ * reserve_growth(s, node, take, 1000,
                                                                   alt.cpu_milli, alt.memory_mib)),
                 node_free, static_cast<double>(in_domain - k)};
    }
    if (!found || sc < best) {
      found = true;
      best = sc;
      out.gpus.assign(take.begin(), take.end());
    }
  }
  return found;
}

bool Packer::share_on_node(const State& s, const AlternativeData& alt, int model, int node,
                           int nvlink, int only_gpu, const std::vector<double>* penalty,
                           Replica& out, Score& best) const {
  const int ms = alt.milli;
  double node_free = 0;
  int best_gpu = -1;
  for (int g : node_gpus_[node]) {
    const auto& gd = p_.gpus[g];
    if (gd.model != model || gd.mode != GpuMode::Shared) continue;
    if (nvlink >= 0 && gd.nvlink != nvlink) continue;
    if (only_gpu >= 0 && g != only_gpu) continue;
    const int fr = 1000 - s.gpus[g].milli;
    node_free += fr;
    if (fr < ms) continue;
    double delta =
        node_workload_.empty()
            ? share_fragment_[fr - ms] - share_fragment_[fr]
            : fragment_key(node_fragment_growth(s, node, {g}, ms, alt.cpu_milli, alt.memory_mib),
                           node);
    if (pattern()) {  // the least loss of pattern value first
      if (node_workload_.empty()) {
        delta += reserve_weight_ * reserve_growth(s, node, {g}, ms, alt.cpu_milli, alt.memory_mib);
      }
      delta = pattern_key(pattern_values_.loss(fr, ms), delta);
    }
    // Without a workload: leftover first (best fit), then prefer GPUs already shared. With
    // one (FGD's measure): equal steps go to the first GPU, as FGD's plugin breaks them.
    const double second = node_workload_.empty() ? (fr - ms) + (s.gpus[g].milli > 0 ? 0.0 : 0.5)
                                                 : static_cast<double>(g);
    Score sc{penalty_of(penalty, g), delta, second, 0};
    if (best_gpu < 0 || sc < best) {
      best = sc;
      best_gpu = g;
    }
  }
  if (best_gpu < 0) return false;
  best.tertiary = node_free;
  out.kind = UnitKind::Share;
  out.gpus.assign(1, best_gpu);
  out.milli = ms;
  out.profile = -1;
  out.start = -1;
  return true;
}

bool Packer::mig_on_node(const State& s, int model, int profile, int node, int nvlink, int only_gpu,
                         const std::vector<double>* penalty, Replica& out, Score& best) const {
  if (profile < 0) return false;
  const auto& md = p_.models[model];
  const auto& pr = md.profiles[profile];
  const auto& pot = mig_potential_[model];
  double node_free = 0;
  int best_gpu = -1, best_start = -1;
  for (int g : node_gpus_[node]) {
    const auto& gd = p_.gpus[g];
    if (gd.model != model || gd.mode != GpuMode::Mig) continue;
    if (nvlink >= 0 && gd.nvlink != nvlink) continue;
    if (only_gpu >= 0 && g != only_gpu) continue;
    const auto& gs = s.gpus[g];
    node_free += md.mig_units - std::popcount(static_cast<std::uint32_t>(gs.mig_mask));
    if (gs.counts[profile] >= pr.max_count || (pr.media && gs.media >= 1)) continue;
    for (int st = 0; st + pr.size <= md.mig_units; ++st) {
      if (!((pr.starts_mask >> st) & 1u) || !gd.layout_allows(profile, st)) continue;
      const std::uint32_t bits = slice_bits(st, pr.size);
      if (gs.mig_mask & bits) continue;
      const double loss = pot[gs.mig_mask] - pot[gs.mig_mask | bits];
      Score sc{penalty_of(penalty, g), loss, gs.mig_mask ? 0.0 : 1.0, 0};
      if (best_gpu < 0 || sc < best) {
        best = sc;
        best_gpu = g;
        best_start = st;
      }
    }
  }
  if (best_gpu < 0) return false;
  best.tertiary = node_free;
  out.kind = UnitKind::Mig;
  out.gpus.assign(1, best_gpu);
  out.profile = profile;
  out.start = best_start;
  out.milli = 0;
  return true;
}

void Packer::keep_top(std::vector<std::pair<Score, int>>& top, const Score& sc, int n) {
  auto it = top.end();
  while (it != top.begin() && sc < std::prev(it)->first) --it;
  if (it - top.begin() <= static_cast<std::ptrdiff_t>(kRunners)) {
    top.insert(it, {sc, n});
    if (top.size() > kRunners + 1) top.pop_back();
  }
}

bool Packer::gang_in(State& s, const AlternativeData& alt, int model, int profile,
                     const std::vector<int>& nodes, int nvlink, int only_gpu,
                     const std::vector<double>* penalty, std::vector<Replica>& out,
                     double* total_penalty, double* total_primary, Scratch& tmp,
                     std::vector<int>* runners) const {
  out.clear();
  // Runners-up (one replica only): the best kRunners + 1 (score, node) seen, best first; on equal
  // scores the earlier node stays ahead, as in the choice itself.
  auto& top = tmp.top;
  top.clear();
  const bool record = runners != nullptr && alt.replicas == 1;
  double pen_sum = 0, prim_sum = 0;
  bool ok = true;
  for (int r = 0; r < alt.replicas && ok; ++r) {
    Replica& best_rep = tmp.best_rep;  // reused: no allocation per replica and node
    Replica& cand = tmp.cand_rep;
    Score best, sc;
    bool found = false;
    for (int n : nodes) {
      // Whole GPUs, best fit: a node with more free GPUs than the best so far cannot win.
      if (found && alt.kind == UnitKind::Whole && penalty == nullptr && nvlink < 0 &&
          single_model_[n] && node_workload_.empty() && !pattern()) {
        // The node's score is at least (0, free - gpus, 0, 0); equal scores keep the earlier.
        const Score& bar = record ? top.back().first : best;
        const double prim = static_cast<double>(s.node_free_whole[n] - alt.gpus);
        if ((!record || top.size() > kRunners) &&
            (prim > bar.primary ||
             (prim == bar.primary && bar.secondary <= 0 && bar.tertiary <= 0))) {
          continue;
        }
      }
      if (!best_on_node(s, alt, model, profile, n, nvlink, only_gpu, penalty, cand, sc, tmp))
        continue;
      if (record) keep_top(top, sc, n);
      if (!found || sc < best) {
        found = true;
        best = sc;
        std::swap(best_rep, cand);  // best_on_node sets every field of `cand` when it succeeds
      }
    }
    if (!found) {
      ok = false;
      break;
    }
    pen_sum += best.penalty;
    prim_sum += best.primary;
    apply_replica(p_, s, best_rep, alt.cpu_milli, alt.memory_mib, +1);
    out.push_back(best_rep);
  }
  for (auto it = out.rbegin(); it != out.rend(); ++it) {
    apply_replica(p_, s, *it, alt.cpu_milli, alt.memory_mib, -1);
  }
  if (!ok) out.clear();
  if (record && ok) {
    runners->clear();
    for (std::size_t i = 1; i < top.size(); ++i) runners->push_back(top[i].second);
  }
  if (total_penalty) *total_penalty = pen_sum;
  if (total_primary) *total_primary = prim_sum;
  return ok;
}

// One search of find(): its arguments, the candidate nodes and the best placement so far.
struct Packer::Query {
  State& s;
  const AlternativeData& alt;
  int model;
  int profile;
  const std::vector<double>* penalty;
  bool first_fit;
  const std::vector<int>* only_nodes;
  std::vector<Replica>& out;
  double* primary;
  Scratch& tmp;
  const std::vector<int>* nodes = nullptr;  // the model's nodes (among only_nodes)
  std::int64_t need = 0;                    // free capacity the whole gang takes
  bool found = false;
  double best_pen = std::numeric_limits<double>::infinity();
  double best_prim = std::numeric_limits<double>::infinity();

  // Keeps the placement in tmp.cand if it beats the best so far.
  void consider(double pen, double prim) {
    if (!found || pen < best_pen || (pen == best_pen && prim < best_prim)) {
      found = true;
      best_pen = pen;
      best_prim = prim;
      out.swap(tmp.cand);  // gang_in clears `cand` before reusing it
      if (primary != nullptr) *primary = prim;
    }
  }
};

bool Packer::find(State& s, const AlternativeData& alt, int model, int profile,
                  const std::vector<double>* penalty, bool first_fit, std::vector<Replica>& out,
                  const std::vector<int>* only_nodes, std::vector<int>* runners,
                  double* primary) const {
  out.clear();
  if (primary != nullptr) *primary = 0.0;
  if (runners != nullptr) runners->assign(1, -1);
  if (penalty != nullptr) runners = nullptr;
  if (model < 0 || model >= static_cast<int>(p_.models.size())) return false;
  if (alt.kind == UnitKind::Mig && profile < 0) return false;
  Query q{s, alt, model, profile, penalty, first_fit, only_nodes, out, primary, scratch()};
  q.nodes = &candidate_nodes(q);
  if (q.nodes->empty()) return false;
  q.need = replica_need(alt, model, profile) * alt.replicas;
  // Hopeless if the whole model has less free capacity than the gang needs.
  if (!s.model_free_whole.empty()) {
    const std::int64_t have = alt.kind == UnitKind::Whole   ? s.model_free_whole[model]
                              : alt.kind == UnitKind::Share ? s.model_free_milli[model]
                                                            : s.model_free_slices[model];
    if (have < q.need) return false;
  }

  Locality loc = alt.locality;
  if (loc == Locality::Gpu && alt.kind == UnitKind::Whole) loc = Locality::Node;
  switch (loc) {
    case Locality::Gpu:
      find_per_gpu(q);
      break;
    case Locality::Nvlink:
    case Locality::Node:
      find_in_domains(q, loc, runners);
      break;
    case Locality::Any:
      find_anywhere(q, runners);
      break;
    default:  // rack / zone: groups of nodes, tightest group first
      find_in_groups(q, loc);
      break;
  }
  return q.found;
}

void Packer::hosts(const State& s, const AlternativeData& alt, int model, int profile,
                   std::vector<int>& out) const {
  out.clear();
  if (model < 0 || model >= static_cast<int>(p_.models.size())) return;
  if (alt.kind == UnitKind::Mig && profile < 0) return;
  auto& tmp = scratch();
  Replica rep;
  Score score;
  for (int n : model_nodes_[model]) {
    if (best_on_node(s, alt, model, profile, n, -1, -1, nullptr, rep, score, tmp)) out.push_back(n);
  }
}

// Nodes of the model among `only_nodes` (sorted, as only_nodes), found per node in O(1); all of
// the model's nodes without `only_nodes`.
const std::vector<int>& Packer::candidate_nodes(Query& q) const {
  auto& restricted = q.tmp.restricted;
  restricted.clear();
  if (q.only_nodes == nullptr) return model_nodes_[q.model];
  const std::size_t n_models = p_.models.size();
  for (int n : *q.only_nodes) {
    if (node_has_model_[static_cast<std::size_t>(n) * n_models +
                        static_cast<std::size_t>(q.model)]) {
      restricted.push_back(n);
    }
  }
  return restricted;
}

std::int64_t Packer::replica_need(const AlternativeData& alt, int model, int profile) const {
  switch (alt.kind) {
    case UnitKind::Whole:
      return alt.gpus;
    case UnitKind::Share:
      return alt.milli;
    case UnitKind::Mig:
      return p_.models[model].profiles[profile].size;
  }
  return 0;
}

void Packer::find_per_gpu(Query& q) const {
  const auto& alt = q.alt;
  auto& tmp = q.tmp;
  // With `only_nodes`, the GPUs of those nodes in the same (ascending) order as the full list.
  auto& only_gpus = tmp.only_gpus;
  if (q.only_nodes != nullptr) {
    only_gpus.clear();
    for (int n : *q.nodes) {
      for (int g : node_gpus_[n]) {
        if (p_.gpus[g].model == q.model) only_gpus.push_back(g);
      }
    }
    std::sort(only_gpus.begin(), only_gpus.end());
  }
  for (int g : q.only_nodes != nullptr ? only_gpus : model_gpus_[q.model]) {
    const auto& gd = p_.gpus[g];
    if (!serves(gd.mode, alt.kind)) continue;
    if (alt.kind == UnitKind::Share && 1000 - q.s.gpus[g].milli < q.need) continue;
    auto& one = tmp.one;
    one[0] = gd.node;
    double pen = 0, prim = 0;
    if (!gang_in(q.s, alt, q.model, q.profile, one, -1, g, q.penalty, tmp.cand, &pen, &prim, tmp))
      continue;
    q.consider(pen, prim);
    // With a penalty, a cheaper eviction elsewhere may still be found: stop only at zero.
    if ((q.first_fit || prim <= 0) && (q.penalty == nullptr || pen <= 0)) break;
  }
}

void Packer::find_in_domains(Query& q, Locality loc, std::vector<int>* runners) const {
  // Candidate domains with their free capacity; tightest first.
  using Dom = Scratch::Dom;
  auto& tmp = q.tmp;
  auto& doms = tmp.doms;
  auto& seen = tmp.seen;
  doms.clear();
  for (int n : *q.nodes) {
    if (loc == Locality::Node) {
      const auto cap = capacity_on(q.s, q.alt.kind, q.model, n, -1);
      if (cap >= q.need) doms.push_back({cap, n, -1});
    } else {
      // A domain holds no more than its node: skip nodes that cannot hold the gang at all.
      if (single_model_[n] && capacity_on(q.s, q.alt.kind, q.model, n, -1) < q.need) continue;
      seen.clear();
      for (int g : node_gpus_[n]) {
        const auto& gd = p_.gpus[g];
        if (gd.model != q.model) continue;
        if (std::find(seen.begin(), seen.end(), gd.nvlink) != seen.end()) continue;
        seen.push_back(gd.nvlink);
        const auto cap = capacity_on(q.s, q.alt.kind, q.model, n, gd.nvlink);
        if (cap >= q.need) doms.push_back({cap, n, gd.nvlink});
      }
    }
  }
  // Tightest first: a heap, since the first domain usually fits and sorting all would cost
  // more than the search.
  const auto later = [](const Dom& a, const Dom& b) {
    if (a.cap != b.cap) return a.cap > b.cap;
    if (a.node != b.node) return a.node > b.node;
    return a.nvlink > b.nvlink;
  };
  std::make_heap(doms.begin(), doms.end(), later);
  auto& one = tmp.one;
  while (!doms.empty()) {
    std::pop_heap(doms.begin(), doms.end(), later);
    const Dom d = doms.back();
    doms.pop_back();
    one[0] = d.node;
    double pen = 0, prim = 0;
    if (!gang_in(q.s, q.alt, q.model, q.profile, one, d.nvlink, -1, q.penalty, tmp.cand, &pen,
                 &prim, tmp))
      continue;
    q.consider(pen, prim);
    if (q.penalty == nullptr || pen <= 0) break;  // tightest first = best fit
  }
  if (q.found && runners != nullptr) {
    // The next feasible domains in the same order.
    runners->clear();
    while (!doms.empty() && runners->size() < kRunners) {
      std::pop_heap(doms.begin(), doms.end(), later);
      const Dom d = doms.back();
      doms.pop_back();
      one[0] = d.node;
      if (gang_in(q.s, q.alt, q.model, q.profile, one, d.nvlink, -1, nullptr, tmp.cand, nullptr,
                  nullptr, tmp)) {
        runners->push_back(d.node);
      }
    }
  }
}

void Packer::find_anywhere(Query& q, std::vector<int>* runners) const {
  const auto& alt = q.alt;
  if (alt.replicas > 1) {
    // Over every node of a model whose nodes hold no other model, the sum is the model's
    // counter (kept by apply_replica in the same measure): no loop needed.
    std::int64_t cap = 0;
    if (q.only_nodes == nullptr && model_alone_[q.model] && !q.s.model_free_whole.empty()) {
      cap = alt.kind == UnitKind::Whole   ? q.s.model_free_whole[q.model]
            : alt.kind == UnitKind::Share ? q.s.model_free_milli[q.model]
                                          : q.s.model_free_slices[q.model];
    } else {
      for (int n : *q.nodes) cap += capacity_on(q.s, alt.kind, q.model, n, -1);
    }
    if (cap < q.need) return;
  }
  double pen = 0, prim = 0;
  if (gang_in(q.s, alt, q.model, q.profile, *q.nodes, -1, -1, q.penalty, q.tmp.cand, &pen, &prim,
              q.tmp, alt.replicas == 1 ? runners : nullptr)) {
    q.consider(pen, prim);
  }
}

void Packer::find_in_groups(Query& q, Locality loc) const {
  const auto& nodes = *q.nodes;
  std::vector<std::vector<int>> restricted_groups;
  const auto& all_groups = (loc == Locality::Rack ? rack_model_nodes_ : zone_model_nodes_)[q.model];
  if (q.only_nodes != nullptr) {
    // Each group's intersection with the (sorted) candidate nodes, non-empty ones in group
    // order: the candidates bucketed by their group index, in O(candidates log candidates)
    // rather than a pass over every group.
    const auto& group_of = (loc == Locality::Rack ? rack_group_of_ : zone_group_of_)[q.model];
    std::vector<std::pair<int, int>> keyed;  // (group, node); nodes stay sorted within a group
    keyed.reserve(nodes.size());
    for (int n : nodes) keyed.emplace_back(group_of[n], n);
    std::sort(keyed.begin(), keyed.end());
    for (std::size_t i = 0; i < keyed.size(); ++i) {
      if (i == 0 || keyed[i].first != keyed[i - 1].first) restricted_groups.emplace_back();
      restricted_groups.back().push_back(keyed[i].second);
    }
  }
  const auto& groups = q.only_nodes != nullptr ? restricted_groups : all_groups;
  auto& order = q.tmp.groups;
  order.clear();
  for (std::size_t i = 0; i < groups.size(); ++i) {
    std::int64_t cap = 0;
    for (int n : groups[i]) cap += capacity_on(q.s, q.alt.kind, q.model, n, -1);
    if (cap < q.need) continue;
    order.emplace_back(cap, i);
  }
  // Tightest first (ties: group order), popped from a heap: the first group usually holds the
  // gang, so sorting them all would cost more than the search.
  const auto later = std::greater<std::pair<std::int64_t, std::size_t>>();
  std::make_heap(order.begin(), order.end(), later);
  while (!order.empty()) {
    std::pop_heap(order.begin(), order.end(), later);
    const std::size_t i = order.back().second;
    order.pop_back();
    double pen = 0, prim = 0;
    if (!gang_in(q.s, q.alt, q.model, q.profile, groups[i], -1, -1, q.penalty, q.tmp.cand, &pen,
                 &prim, q.tmp))
      continue;
    q.consider(pen, prim);
    if (q.penalty == nullptr || pen <= 0) break;  // tightest first = best fit
  }
}

}  // namespace gpualloc
