// nextGitspaceState: every transition of docs/control-plane.md's lifecycle
// is allowed and lands where the doc says; every other (state, event) pair is
// refused.
#include "control/server/gitspace_lifecycle.h"

#include <gtest/gtest.h>

#include <map>
#include <tuple>
#include <utility>
#include <vector>

namespace spacegate {
namespace {

using S = GitspaceState;
using E = GitspaceEvent;

const std::vector<S> kStates = {S::kUninitialized, S::kStarting, S::kRunning,
                                S::kStopping,      S::kStopped,  S::kCleaning,
                                S::kCleaned,       S::kDeleted,  S::kError};
const std::vector<E> kEvents = {E::kCreate,  E::kStart,   E::kStop,    E::kReset,
                                E::kDelete,  E::kStarted, E::kStopped, E::kCleaned,
                                E::kRestart, E::kDeleted, E::kFailed,  E::kDeadline};

// The whole lifecycle, written out from the doc.
std::map<std::pair<S, E>, S> allowedTransitions() {
  std::map<std::pair<S, E>, S> allowed = {
      {{S::kUninitialized, E::kCreate}, S::kStarting}, {{S::kStarting, E::kStarted}, S::kRunning},
      {{S::kRunning, E::kStop}, S::kStopping},         {{S::kStopping, E::kStopped}, S::kStopped},
      {{S::kStopped, E::kStart}, S::kStarting},        {{S::kRunning, E::kReset}, S::kCleaning},
      {{S::kStopped, E::kReset}, S::kCleaning},        {{S::kError, E::kReset}, S::kCleaning},
      {{S::kCleaning, E::kCleaned}, S::kCleaned},      {{S::kCleaned, E::kRestart}, S::kStarting},
      {{S::kCleaning, E::kDeleted}, S::kDeleted},      {{S::kError, E::kStart}, S::kStarting},
  };
  for (S busy : {S::kStarting, S::kStopping, S::kCleaning}) {
    allowed[{busy, E::kFailed}] = S::kError;
    allowed[{busy, E::kDeadline}] = S::kError;
  }
  for (S state : kStates) {
    if (state != S::kDeleted) allowed[{state, E::kDelete}] = S::kCleaning;
  }
  return allowed;
}

TEST(GitspaceLifecycleTest, EveryDocumentedTransitionLandsWhereTheDocSays) {
  for (const auto& [from_event, to] : allowedTransitions()) {
    auto [from, event] = from_event;
    std::optional<S> next = nextGitspaceState(from, event);
    ASSERT_TRUE(next.has_value()) << gitspaceStateName(from) << " --" << gitspaceEventName(event)
                                  << "--> refused";
    EXPECT_EQ(*next, to) << gitspaceStateName(from) << " --" << gitspaceEventName(event) << "--> "
                         << gitspaceStateName(*next);
  }
}

TEST(GitspaceLifecycleTest, EveryOtherPairIsRefused) {
  auto allowed = allowedTransitions();
  int refused = 0;
  for (S state : kStates) {
    for (E event : kEvents) {
      if (allowed.count({state, event})) continue;
      EXPECT_FALSE(nextGitspaceState(state, event).has_value())
          << gitspaceStateName(state) << " --" << gitspaceEventName(event) << "--> allowed";
      ++refused;
    }
  }
  EXPECT_EQ(refused, static_cast<int>(kStates.size() * kEvents.size() - allowed.size()));
}

TEST(GitspaceLifecycleTest, SpecificRefusals) {
  EXPECT_FALSE(nextGitspaceState(S::kDeleted, E::kDelete));  // deleted is the end
  EXPECT_FALSE(nextGitspaceState(S::kDeleted, E::kStart));
  EXPECT_FALSE(nextGitspaceState(S::kStarting, E::kStop));  // stop only from running
  EXPECT_FALSE(nextGitspaceState(S::kRunning, E::kStart));  // already running
  EXPECT_FALSE(nextGitspaceState(S::kStarting, E::kReset));
  EXPECT_FALSE(nextGitspaceState(S::kRunning, E::kFailed));  // only busy states fail
  EXPECT_FALSE(nextGitspaceState(S::kStopped, E::kDeadline));
  EXPECT_FALSE(nextGitspaceState(S::kRunning, E::kStopped));   // a stale stop result
  EXPECT_FALSE(nextGitspaceState(S::kCleaning, E::kStarted));  // a start result after delete
  EXPECT_FALSE(nextGitspaceState(S::kUninitialized, E::kStart));
}

TEST(GitspaceLifecycleTest, TheDocumentedWalkThrough) {
  // create -> running -> stop -> stopped -> start -> running -> reset ->
  // running -> delete -> deleted
  std::vector<std::pair<E, S>> walk = {
      {E::kCreate, S::kStarting}, {E::kStarted, S::kRunning}, {E::kStop, S::kStopping},
      {E::kStopped, S::kStopped}, {E::kStart, S::kStarting},  {E::kStarted, S::kRunning},
      {E::kReset, S::kCleaning},  {E::kCleaned, S::kCleaned}, {E::kRestart, S::kStarting},
      {E::kStarted, S::kRunning}, {E::kDelete, S::kCleaning}, {E::kDeleted, S::kDeleted},
  };
  S state = S::kUninitialized;
  for (auto [event, expected] : walk) {
    std::optional<S> next = nextGitspaceState(state, event);
    ASSERT_TRUE(next) << gitspaceStateName(state) << " " << gitspaceEventName(event);
    EXPECT_EQ(*next, expected);
    state = *next;
  }
}

TEST(GitspaceLifecycleTest, NamesRoundTrip) {
  for (S state : kStates) {
    S parsed = S::kUninitialized;
    ASSERT_TRUE(parseGitspaceState(gitspaceStateName(state), parsed));
    EXPECT_EQ(parsed, state);
  }
  S parsed;
  EXPECT_FALSE(parseGitspaceState("Running", parsed));
  EXPECT_FALSE(parseGitspaceState("", parsed));
}

TEST(GitspaceLifecycleTest, BusyStates) {
  for (S state : kStates) {
    bool busy = state == S::kStarting || state == S::kStopping || state == S::kCleaning;
    EXPECT_EQ(isBusyState(state), busy) << gitspaceStateName(state);
  }
}

}  // namespace
}  // namespace spacegate
