// SseReader: events as the control plane writes them, every line ending
// (also split across reads, byte by byte), multi-line data, comments,
// last event id, retry, a BOM, events without data, stopping, and the size
// bound.
#include "service/sse_reader.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace spacegate {
namespace {

using namespace std::string_literals;

// Feeds `text` in pieces of `step` bytes (0: all at once); the events seen.
std::vector<SseEvent> readAll(const std::string& text, size_t step = 0,
                              SseReader* reader_out = nullptr) {
  SseReader local;
  SseReader& reader = reader_out ? *reader_out : local;
  std::vector<SseEvent> events;
  auto on_event = [&](const SseEvent& event) {
    events.push_back(event);
    return true;
  };
  if (step == 0) {
    EXPECT_EQ(reader.feed(text, on_event), SseReader::Status::kMore);
  } else {
    for (size_t i = 0; i < text.size(); i += step) {
      EXPECT_EQ(reader.feed(std::string_view(text).substr(i, step), on_event),
                SseReader::Status::kMore);
    }
  }
  return events;
}

TEST(SseReaderTest, ReadsControlPlaneEvents) {
  std::string text =
      "id: 7\nevent: state_changed\ndata: {\"type\":\"state_changed\",\"id\":7}\n\n"
      ": keep-alive\n\n"
      "id: 8\nevent: agent_setup_log\ndata: {\"message\":\"Cloning\"}\n\n";
  auto events = readAll(text);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].id, "7");
  EXPECT_EQ(events[0].type, "state_changed");
  EXPECT_EQ(events[0].data, "{\"type\":\"state_changed\",\"id\":7}");
  EXPECT_EQ(events[1].id, "8");
  EXPECT_EQ(events[1].type, "agent_setup_log");
  EXPECT_EQ(events[1].data, "{\"message\":\"Cloning\"}");
}

TEST(SseReaderTest, SameEventsWhateverTheReadSizes) {
  std::string text =
      "id: 1\r\nevent: a\r\ndata: one\r\ndata: two\r\n\r\n"
      ":comment\r\n\r\n"
      "id: 2\revent: b\rdata: three\r\r"
      "id: 3\nevent: c\ndata: four\n\n";
  auto whole = readAll(text);
  ASSERT_EQ(whole.size(), 3u);
  EXPECT_EQ(whole[0].data, "one\ntwo");
  EXPECT_EQ(whole[1].type, "b");
  EXPECT_EQ(whole[1].data, "three");
  EXPECT_EQ(whole[2].id, "3");
  for (size_t step = 1; step <= 7; ++step) {
    auto pieces = readAll(text, step);
    ASSERT_EQ(pieces.size(), whole.size()) << "step " << step;
    for (size_t i = 0; i < whole.size(); ++i) {
      EXPECT_EQ(pieces[i].id, whole[i].id) << "step " << step;
      EXPECT_EQ(pieces[i].type, whole[i].type) << "step " << step;
      EXPECT_EQ(pieces[i].data, whole[i].data) << "step " << step;
    }
  }
}

TEST(SseReaderTest, CrlfSplitBetweenReadsIsOneLineEnd) {
  // "data: x\r" | "\n\r\n": a split CRLF must not count as two line ends
  // (which would end the event early, before the second data line).
  SseReader reader;
  std::vector<SseEvent> events;
  auto on_event = [&](const SseEvent& event) {
    events.push_back(event);
    return true;
  };
  reader.feed("data: x\r", on_event);
  reader.feed("\ndata: y\r", on_event);
  EXPECT_TRUE(events.empty());
  reader.feed("\n\r", on_event);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].data, "x\ny");
}

TEST(SseReaderTest, FieldValueRules) {
  auto events = readAll(
      "data:no space\n\n"
      "data:  two spaces\n\n"
      "data\n\n"                    // a field without a colon: empty value
      "data: a:b: c\n\n"            // only the first colon splits
      "unknown: x\ndata: kept\n\n"  // unknown fields are ignored
      "event\ndata: default\n\n");  // an empty type is "message"
  ASSERT_EQ(events.size(), 6u);
  EXPECT_EQ(events[0].data, "no space");
  EXPECT_EQ(events[1].data, " two spaces");
  EXPECT_EQ(events[2].data, "");
  EXPECT_EQ(events[3].data, "a:b: c");
  EXPECT_EQ(events[4].data, "kept");
  EXPECT_EQ(events[4].type, "message");
  EXPECT_EQ(events[5].type, "message");
}

TEST(SseReaderTest, EventsWithoutDataAreNotDispatchedButTheirIdStays) {
  SseReader reader;
  auto events = readAll(
      "id: 4\nevent: ping\n\n"  // no data: nothing, but the id is now 4
      "data: after\n\n"         // carries the last id
      "id\ndata: cleared\n\n",  // an empty id resets it
      0, &reader);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].id, "4");
  EXPECT_EQ(events[0].type, "message");  // the type does not outlive its event
  EXPECT_EQ(events[0].data, "after");
  EXPECT_EQ(events[1].id, "");
  EXPECT_EQ(reader.lastEventId(), "");
}

TEST(SseReaderTest, IdWithNulIsIgnored) {
  SseReader reader;
  auto events = readAll("id: 5\ndata: a\n\nid: 6\0x\ndata: b\n\n"s, 0, &reader);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].id, "5");
  EXPECT_EQ(reader.lastEventId(), "5");
}

TEST(SseReaderTest, CommentsOnlyProduceNothing) {
  EXPECT_TRUE(readAll(": keep-alive\n\n: keep-alive\n\n:\n\n").empty());
}

TEST(SseReaderTest, IncompleteEventWaitsForItsBlankLine) {
  SseReader reader;
  std::vector<SseEvent> events;
  auto on_event = [&](const SseEvent& event) {
    events.push_back(event);
    return true;
  };
  reader.feed("id: 9\nevent: x\ndata: {\"a\":", on_event);
  EXPECT_TRUE(events.empty());
  reader.feed("1}\n", on_event);
  EXPECT_TRUE(events.empty());
  reader.feed("\n", on_event);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].data, "{\"a\":1}");
  EXPECT_EQ(reader.lastEventId(), "9");
}

TEST(SseReaderTest, RetryTakesDigitsOnly) {
  SseReader reader;
  readAll("retry: 2500\n\nretry: 12x\n\nretry:\n\n", 0, &reader);
  EXPECT_EQ(reader.retryMs(), 2500u);
}

TEST(SseReaderTest, LeadingBomIsDroppedEvenWhenSplit) {
  for (size_t step = 1; step <= 4; ++step) {
    auto events = readAll(
        "\xEF\xBB\xBF"
        "data: x\n\n",
        step);
    ASSERT_EQ(events.size(), 1u) << "step " << step;
    EXPECT_EQ(events[0].data, "x");
  }
  // Only at the start: later it is part of the field name (ignored).
  auto events = readAll(
      "data: a\n\n\xEF\xBB\xBF"
      "data: b\n\n");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].data, "a");
}

TEST(SseReaderTest, StopsWhenTheCallbackSaysSo) {
  SseReader reader;
  int seen = 0;
  auto status = reader.feed("data: 1\n\ndata: 2\n\ndata: 3\n\n", [&](const SseEvent& event) {
    ++seen;
    return event.data != "2";
  });
  EXPECT_EQ(status, SseReader::Status::kStopped);
  EXPECT_EQ(seen, 2);
}

TEST(SseReaderTest, LinesAndDataOverTheBoundAreRefused) {
  auto ignore = [](const SseEvent&) { return true; };
  SseReader reader(16);
  EXPECT_EQ(reader.feed("data: 0123456789", ignore), SseReader::Status::kMore);
  EXPECT_EQ(reader.feed("abcdef", ignore), SseReader::Status::kTooLong);
  SseReader whole_line(16);
  EXPECT_EQ(whole_line.feed(": " + std::string(20, 'x') + "\n", ignore),
            SseReader::Status::kTooLong);
  SseReader many_lines(16);
  EXPECT_EQ(many_lines.feed("data: 12345\ndata: 12345\ndata: 12345\n", ignore),
            SseReader::Status::kTooLong);
}

}  // namespace
}  // namespace spacegate
