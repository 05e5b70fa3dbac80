#include "auth/access_policy.h"

#include <gtest/gtest.h>

#include <memory>

#include "http1/message_parser.h"
#include "net/socket_address.h"

namespace spacegate {
namespace {

constexpr int64_t kNow = 1'800'000'000;

class AccessPolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    key_ = generateSigningKey("k1");
    auto ring = std::make_shared<KeyRing>();
    ring->add("k1", key_.public_key);
    keys_ = ring;
    route_.id = "gs-a-ide";
    route_.host = "gs-a.test";
    route_.gitspace = "gs-a";
    route_.owner = "user-1";
    route_.access = RouteAccess::kOwner;
    std::string error;
    parseSocketAddress("10.0.0.5:8089", route_.upstream, error);
  }

  std::string token(std::string sub = "user-1", std::string gs = "gs-a",
                    std::vector<std::string> scopes = {"ide"}, std::string aud = "") {
    AccessToken access;
    access.sub = std::move(sub);
    access.gs = std::move(gs);
    access.aud = std::move(aud);
    access.iat = kNow;
    access.exp = kNow + 600;
    access.scopes = std::move(scopes);
    return signAccessToken(access, key_);
  }

  AccessDecision decide(const std::string& head_text) {
    bytes_ = std::make_shared<std::string>(head_text);
    Http1MessageParser parser(Http1MessageParser::Type::kRequest, limits_);
    request_ = RequestHead{};
    EXPECT_EQ(parser.parseHead(bytes_->data(), bytes_->size(), request_),
              Http1MessageParser::HeadStatus::kComplete)
        << head_text;
    AccessContext context{config_, keys_, cache_, kNow, false};
    return decideAccess(request_, route_, context);
  }

  using Outcome = AccessDecision::Outcome;
  Limits limits_;
  AuthConfig config_;
  SigningKey key_;
  KeyRingSnapshot keys_;
  TokenCache cache_;
  Route route_;
  std::shared_ptr<std::string> bytes_;
  RequestHead request_;
};

TEST_F(AccessPolicyTest, OwnerRouteNeedsTheOwnersTokenForThisGitspace) {
  EXPECT_EQ(decide("GET / HTTP/1.1\r\nHost: gs-a.test\r\n\r\n").outcome, Outcome::kUnauthorized);
  auto allowed =
      decide("GET / HTTP/1.1\r\nHost: gs-a.test\r\nAuthorization: Bearer " + token() + "\r\n\r\n");
  EXPECT_EQ(allowed.outcome, Outcome::kAllow);
  EXPECT_TRUE(allowed.strip_authorization);
  EXPECT_EQ(decide("GET / HTTP/1.1\r\nHost: gs-a.test\r\nAuthorization: Bearer " + token("user-2") +
                   "\r\n\r\n")
                .outcome,
            Outcome::kUnauthorized);
  EXPECT_EQ(decide("GET / HTTP/1.1\r\nHost: gs-a.test\r\nAuthorization: Bearer " +
                   token("user-1", "gs-b") + "\r\n\r\n")
                .outcome,
            Outcome::kUnauthorized);
  EXPECT_EQ(decide("GET / HTTP/1.1\r\nHost: gs-a.test\r\nAuthorization: Bearer " +
                   token("user-1", "gs-a", {"ssh"}) + "\r\n\r\n")
                .outcome,
            Outcome::kUnauthorized);
  EXPECT_EQ(decide("GET / HTTP/1.1\r\nHost: gs-a.test\r\nAuthorization: Bearer " +
                   token("user-1", "*") + "\r\n\r\n")
                .outcome,
            Outcome::kAllow);
}

TEST_F(AccessPolicyTest, AgentAndUserTokensDoNotCross) {
  EXPECT_EQ(decide("GET / HTTP/1.1\r\nHost: gs-a.test\r\nAuthorization: Bearer " +
                   token("delegate", "gs-a", {"agent"}) + "\r\n\r\n")
                .outcome,
            Outcome::kUnauthorized);
  route_.access = RouteAccess::kAgent;
  EXPECT_EQ(
      decide("GET / HTTP/1.1\r\nHost: gs-a.test\r\nAuthorization: Bearer " + token() + "\r\n\r\n")
          .outcome,
      Outcome::kUnauthorized);
  std::string agent = token("delegate", "gs-a", {"agent"});
  EXPECT_EQ(
      decide("GET / HTTP/1.1\r\nHost: gs-a.test\r\nAuthorization: Bearer " + agent + "\r\n\r\n")
          .outcome,
      Outcome::kAllow);
  EXPECT_EQ(
      decide("GET / HTTP/1.1\r\nHost: gs-a.test\r\nCookie: sg_token=" + agent + "\r\n\r\n").outcome,
      Outcome::kUnauthorized)
      << "a cookie never satisfies an agent route";
}

TEST_F(AccessPolicyTest, ShareLinkOpensOnePort) {
  std::string link = token("user-1", "gs-a", {"port:3000"});
  route_.upstream.port = 3000;
  EXPECT_EQ(
      decide("GET / HTTP/1.1\r\nHost: gs-a.test\r\nAuthorization: Bearer " + link + "\r\n\r\n")
          .outcome,
      Outcome::kAllow);
  route_.upstream.port = 8089;
  EXPECT_EQ(
      decide("GET / HTTP/1.1\r\nHost: gs-a.test\r\nAuthorization: Bearer " + link + "\r\n\r\n")
          .outcome,
      Outcome::kUnauthorized);
}

TEST_F(AccessPolicyTest, QueryTokenBecomesACookie) {
  auto decision =
      decide("GET /p?a=1&sg_token=" + token() + "&b=2 HTTP/1.1\r\nHost: gs-a.test\r\n\r\n");
  ASSERT_EQ(decision.outcome, Outcome::kRedirectWithCookie);
  EXPECT_EQ(decision.location, "/p?a=1&b=2");
  EXPECT_EQ(decision.set_cookie,
            "sg_token=" + token() + "; Path=/; Max-Age=600; HttpOnly; SameSite=Lax");
  EXPECT_EQ(decide("GET /p?sg_token=bogus HTTP/1.1\r\nHost: gs-a.test\r\n\r\n").outcome,
            Outcome::kUnauthorized);
}

TEST_F(AccessPolicyTest, HeaderWinsOverCookieWithoutFallback) {
  auto decision = decide("GET / HTTP/1.1\r\nHost: gs-a.test\r\nAuthorization: Bearer " +
                         token("user-2") + "\r\nCookie: sg_token=" + token() + "\r\n\r\n");
  EXPECT_EQ(decision.outcome, Outcome::kUnauthorized);
  auto cookie_only = decide(
      "GET / HTTP/1.1\r\nHost: gs-a.test\r\nCookie: a=1; sg_token=" + token() + "; b=2\r\n\r\n");
  EXPECT_EQ(cookie_only.outcome, Outcome::kAllow);
  EXPECT_TRUE(cookie_only.strip_cookie);
  EXPECT_FALSE(cookie_only.strip_authorization);
}

TEST_F(AccessPolicyTest, LoginRedirectOnlyForBrowserNavigations) {
  config_.login_url = "https://login.example/sso";
  auto browser = decide("GET /x?y=1 HTTP/1.1\r\nHost: gs-a.test\r\nAccept: text/html\r\n\r\n");
  ASSERT_EQ(browser.outcome, Outcome::kLoginRedirect);
  EXPECT_EQ(browser.location,
            "https://login.example/sso?return_to=http%3A%2F%2Fgs-a.test%2Fx%3Fy%3D1");
  EXPECT_EQ(decide("GET / HTTP/1.1\r\nHost: gs-a.test\r\nAccept: application/json\r\n\r\n").outcome,
            Outcome::kUnauthorized);
}

TEST_F(AccessPolicyTest, WebSocketOriginMustMatchTheHost) {
  std::string upgrade =
      "GET /ws HTTP/1.1\r\nHost: gs-a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n";
  std::string cookie = "Cookie: sg_token=" + token() + "\r\n";
  EXPECT_EQ(decide(upgrade + cookie + "Origin: http://gs-a.test\r\n\r\n").outcome, Outcome::kAllow);
  EXPECT_EQ(decide(upgrade + cookie + "Origin: http://evil.test\r\n\r\n").outcome,
            Outcome::kForbidden);
  EXPECT_EQ(decide(upgrade + cookie + "\r\n").outcome, Outcome::kForbidden);
  EXPECT_EQ(decide(upgrade + "Authorization: Bearer " + token() + "\r\n\r\n").outcome,
            Outcome::kAllow);
}

TEST_F(AccessPolicyTest, AudienceIsChecked) {
  EXPECT_EQ(decide("GET / HTTP/1.1\r\nHost: gs-a.test\r\nAuthorization: Bearer " +
                   token("user-1", "gs-a", {"ide"}, "gs-a.test") + "\r\n\r\n")
                .outcome,
            Outcome::kAllow);
  EXPECT_EQ(decide("GET / HTTP/1.1\r\nHost: gs-a.test\r\nAuthorization: Bearer " +
                   token("user-1", "gs-a", {"ide"}, "other.test") + "\r\n\r\n")
                .outcome,
            Outcome::kUnauthorized);
}

TEST_F(AccessPolicyTest, CacheVerifiesOnce) {
  std::string header =
      "GET / HTTP/1.1\r\nHost: gs-a.test\r\nAuthorization: Bearer " + token() + "\r\n\r\n";
  decide(header);
  decide(header);
  decide(header);
  EXPECT_EQ(cache_.misses(), 1u);
  EXPECT_EQ(cache_.hits(), 2u);
}

TEST(CookieAndQueryTest, Stripping) {
  EXPECT_EQ(removeCookie("a=1; sg_token=xyz; b=\"2\"", "sg_token"), "a=1; b=\"2\"");
  EXPECT_EQ(removeCookie("sg_token=xyz", "sg_token"), "");
  EXPECT_EQ(removeCookie("sg_tokenx=1;sg_token=2", "sg_token"), "sg_tokenx=1");
  std::string value, without;
  ASSERT_TRUE(extractQueryParameter("/p?sg_token=t&x=1", "sg_token", value, without));
  EXPECT_EQ(value, "t");
  EXPECT_EQ(without, "/p?x=1");
  ASSERT_TRUE(extractQueryParameter("/p?sg_token=t", "sg_token", value, without));
  EXPECT_EQ(without, "/p");
  EXPECT_FALSE(extractQueryParameter("/p?x_sg_token=t", "sg_token", value, without));
}

}  // namespace
}  // namespace spacegate
