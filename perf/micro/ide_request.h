// The request and response heads the micro benchmarks work on: what Chromium
// sends for one static asset of a browser IDE (VS Code in the browser,
// behind a Gitspace host), and what the IDE server answers. About 1 KiB with
// the cookies, client hints and fetch metadata a real browser adds.
#pragma once

#include <string_view>

namespace spacegate::perf {

inline constexpr std::string_view kIdeRequestHead =
    "GET /stable-0f2a6c1e9b/static/out/vs/workbench/workbench.web.main.js HTTP/1.1\r\n"
    "Host: gs-4f9c2e.gitspaces.example\r\n"
    "Connection: keep-alive\r\n"
    "sec-ch-ua: \"Chromium\";v=\"120\", \"Not_A Brand\";v=\"8\"\r\n"
    "sec-ch-ua-mobile: ?0\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36\r\n"
    "sec-ch-ua-platform: \"Linux\"\r\n"
    "Accept: */*\r\n"
    "Sec-Fetch-Site: same-origin\r\n"
    "Sec-Fetch-Mode: no-cors\r\n"
    "Sec-Fetch-Dest: script\r\n"
    "Referer: https://gs-4f9c2e.gitspaces.example/?folder=/home/dev/project\r\n"
    "Accept-Encoding: gzip, deflate, br\r\n"
    "Accept-Language: en-US,en;q=0.9,de;q=0.8\r\n"
    "Cookie: spacegate_session=eyJnc19pZCI6ImdzLTRmOWMyZSIsInN1YiI6InVzZXItMSJ9.c2lnbmF0dXJl; "
    "vscode-tkn=3f1c9a7e-52d4-4b8e-9f0a-6d2e1b7c4a90; vscode-cli-secret-half=Zm9vYmFy\r\n"
    "If-None-Match: W/\"1a2b3c-18c4f2a7d10\"\r\n"
    "If-Modified-Since: Tue, 21 Nov 2026 09:12:44 GMT\r\n"
    "\r\n";

inline constexpr std::string_view kIdeResponseHead =
    "HTTP/1.1 200 OK\r\n"
    "Content-Type: application/javascript; charset=utf-8\r\n"
    "Content-Length: 10548123\r\n"
    "Cache-Control: public, max-age=31536000\r\n"
    "ETag: W/\"1a2b3c-18c4f2a7d10\"\r\n"
    "Last-Modified: Tue, 21 Nov 2026 09:12:44 GMT\r\n"
    "Vary: Accept-Encoding\r\n"
    "Date: Sat, 28 Nov 2026 17:00:00 GMT\r\n"
    "Connection: keep-alive\r\n"
    "Keep-Alive: timeout=5\r\n"
    "\r\n";

}  // namespace spacegate::perf
