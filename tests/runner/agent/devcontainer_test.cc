// devcontainer.json parsing: the JSON-with-comments dialect (comments,
// trailing commas, BOM, CRLF), every supported field in every form, and
// every refusal with the field and line it names.
#include "runner/agent/devcontainer.h"

#include <gtest/gtest.h>

#include <string>

namespace spacegate {
namespace {

DevcontainerConfig parseOk(std::string_view text) {
  DevcontainerConfig config;
  DevcontainerError error;
  EXPECT_TRUE(parseDevcontainer(text, config, error)) << error.text();
  return config;
}

DevcontainerError parseError(std::string_view text) {
  DevcontainerConfig config;
  DevcontainerError error;
  EXPECT_FALSE(parseDevcontainer(text, config, error)) << "accepted: " << text;
  EXPECT_FALSE(error.message.empty());
  return error;
}

std::string strip(std::string_view text) {
  std::string json;
  DevcontainerError error;
  EXPECT_TRUE(stripJsonComments(text, json, error)) << error.text();
  EXPECT_EQ(json.size(), text.size());
  return json;
}

using namespace std::string_literals;
using Argv = std::vector<std::string>;

// --- stripJsonComments ---

TEST(StripJsonCommentsTest, LineCommentsBecomeSpaces) {
  EXPECT_EQ(strip("{\"a\": 1 // one\n}"), "{\"a\": 1       \n}");
  EXPECT_EQ(strip("// only\n{}"), "       \n{}");
  EXPECT_EQ(strip("{} // at the end, no newline"), "{}                          ");
}

TEST(StripJsonCommentsTest, BlockCommentsKeepTheirNewlines) {
  EXPECT_EQ(strip("{/* a */\"a\": 1}"), "{       \"a\": 1}");
  EXPECT_EQ(strip("{/* one\ntwo\r\n*/}"), "{      \n   \r\n  }");
  EXPECT_EQ(strip("[1/**/]"), "[1    ]");
  EXPECT_EQ(strip("[1/*/ still a comment */]"), "[1" + std::string(22, ' ') + "]");
}

TEST(StripJsonCommentsTest, CommentLikeTextInStringsIsKept) {
  std::string text =
      R"({"url": "https://example.com/a//b", "glob": "src/**/*.ts", "c": "/* no */", "d": "// no"})";
  EXPECT_EQ(strip(text), text);
}

TEST(StripJsonCommentsTest, EscapedQuotesAndBackslashesDoNotEndStrings) {
  std::string text = R"({"a": "say \"//hi\" /*", "b": "C:\\", "c": "\\\"//"})";
  EXPECT_EQ(strip(text), text);
  EXPECT_EQ(strip(R"(["C:\\" // dir)"), R"(["C:\\"       )");
}

TEST(StripJsonCommentsTest, TrailingCommasInArraysAndObjects) {
  EXPECT_EQ(strip("[1, 2,]"), "[1, 2 ]");
  EXPECT_EQ(strip("{\"a\": 1,}"), "{\"a\": 1 }");
  EXPECT_EQ(strip("{\"a\": [1,],}"), "{\"a\": [1 ] }");
  EXPECT_EQ(strip("[\"x\",\n  // last\n]"), "[\"x\" \n         \n]");
  EXPECT_EQ(strip("[{}, /* c */ \r\n ]"), "[{}" + std::string(10, ' ') + "\r\n ]");
}

TEST(StripJsonCommentsTest, CommasThatAreNotTrailingStay) {
  EXPECT_EQ(strip("[1, 2]"), "[1, 2]");
  EXPECT_EQ(strip("[\",]\"]"), "[\",]\"]");
  // Not after a value: left for the parser to refuse.
  EXPECT_EQ(strip("[,]"), "[,]");
  EXPECT_EQ(strip("[1,,]"), "[1,,]");
  EXPECT_EQ(strip("{\"a\":,}"), "{\"a\":,}");
}

TEST(StripJsonCommentsTest, UnterminatedBlockCommentNamesItsLine) {
  std::string json;
  DevcontainerError error;
  EXPECT_FALSE(stripJsonComments("{\n\"a\": 1 /* open\n\n}", json, error));
  EXPECT_EQ(error.line, 2);
  EXPECT_EQ(error.field, "");
  EXPECT_EQ(error.text(), "line 2: unterminated block comment");
}

TEST(StripJsonCommentsTest, UnterminatedStringNamesItsLine) {
  std::string json;
  DevcontainerError error;
  EXPECT_FALSE(stripJsonComments("{\n\n\"a\": \"open\n}", json, error));
  EXPECT_EQ(error.line, 3);
  EXPECT_FALSE(stripJsonComments("{\"a\": \"ends in an escape\\", json, error));
  EXPECT_EQ(error.line, 1);
  EXPECT_FALSE(stripJsonComments("[\"escaped newline\\\n\"]", json, error));
  EXPECT_EQ(error.line, 1);
  EXPECT_EQ(error.message.find("unterminated string"), 0u);
}

// --- the dialect, through parseDevcontainer ---

TEST(DevcontainerTest, MinimalFile) {
  DevcontainerConfig config = parseOk(R"({"image": "ubuntu:24.04"})");
  EXPECT_EQ(config.image, "ubuntu:24.04");
  EXPECT_EQ(config.name, "");
  EXPECT_TRUE(config.container_env.empty());
  EXPECT_TRUE(config.forward_ports.empty());
  EXPECT_TRUE(config.post_create_command.empty());
  EXPECT_TRUE(config.post_start_command.empty());
  EXPECT_TRUE(config.ignored_fields.empty());
  EXPECT_TRUE(parseOk("{}").image.empty());
}

TEST(DevcontainerTest, CommentsOfBothKindsAndTrailingCommas) {
  DevcontainerConfig config = parseOk(R"(
    // The image.
    {
      /* A block
         comment. */ "image": "https://registry.example//img", // not a comment in the string
      "forwardPorts": [3000, 8080, /* last */],
      "containerEnv": {"A": "/* kept */", "B": "// kept",},
    }
  )");
  EXPECT_EQ(config.image, "https://registry.example//img");
  ASSERT_EQ(config.forward_ports.size(), 2u);
  EXPECT_EQ(config.forward_ports[1].port, 8080);
  EXPECT_EQ(config.container_env.at("A"), "/* kept */");
  EXPECT_EQ(config.container_env.at("B"), "// kept");
}

TEST(DevcontainerTest, CrlfLineEndings) {
  std::string text =
      "{\r\n  // comment\r\n  \"name\": \"crlf\",\r\n  \"remoteUser\": \"root\",\r\n"
      "  \"forwardPorts\": [\r\n    0\r\n  ]\r\n}\r\n";
  DevcontainerError error = parseError(text);
  EXPECT_EQ(error.line, 6);
  EXPECT_EQ(error.field, "forwardPorts[0]");
  text.replace(text.find("    0"), 5, "   22");
  DevcontainerConfig config = parseOk(text);
  EXPECT_EQ(config.name, "crlf");
  EXPECT_EQ(config.remote_user, "root");
  EXPECT_EQ(config.forward_ports[0].port, 22);
}

TEST(DevcontainerTest, Utf8ByteOrderMarkIsSkipped) {
  DevcontainerConfig config = parseOk("\xEF\xBB\xBF{\"name\": \"bom\"}");
  EXPECT_EQ(config.name, "bom");
  DevcontainerError error = parseError("\xEF\xBB\xBF{\n\"name\": 1}");
  EXPECT_EQ(error.line, 2);
  EXPECT_EQ(parseError("\xEF\xBB\xBF").message, "the file is empty");
}

TEST(DevcontainerTest, UnicodeInStrings) {
  DevcontainerConfig config =
      parseOk(R"({"name": "Über \u00e9 \ud83d\ude80 🚀", "containerEnv": {"GREETING": "héllo"}})");
  EXPECT_EQ(config.name, "Über é 🚀 🚀");
  EXPECT_EQ(config.container_env.at("GREETING"), "héllo");
}

// --- fields, every form ---

TEST(DevcontainerTest, NameAndImage) {
  DevcontainerConfig config = parseOk(R"({"name": "My Space", "image": "node:20"})");
  EXPECT_EQ(config.name, "My Space");
  EXPECT_EQ(config.image, "node:20");
}

TEST(DevcontainerTest, ContainerEnv) {
  DevcontainerConfig config = parseOk(
      R"({"containerEnv": {"PATH_EXTRA": "/opt/bin:${PATH}", "_x1": "", "EMPTY_OK": "", "a": "a=b"}})");
  EXPECT_EQ(config.container_env.size(), 4u);
  EXPECT_EQ(config.container_env.at("PATH_EXTRA"), "/opt/bin:${PATH}");
  EXPECT_EQ(config.container_env.at("_x1"), "");
  EXPECT_EQ(config.container_env.at("a"), "a=b");
  EXPECT_TRUE(parseOk(R"({"containerEnv": {}})").container_env.empty());
}

TEST(DevcontainerTest, RemoteUser) {
  for (const char* user : {"root", "vscode", "_apt", "node-1", "build$", "a_b-c"}) {
    EXPECT_EQ(parseOk(std::string(R"({"remoteUser": ")") + user + "\"}").remote_user, user);
  }
  EXPECT_EQ(parseOk(R"({"remoteUser": ")" + std::string(32, 'a') + "\"}").remote_user.size(), 32u);
}

TEST(DevcontainerTest, ForwardPortsEveryForm) {
  DevcontainerConfig config = parseOk(R"({"forwardPorts": [
      3000, 1, 65535, "8080", "localhost:5432", "127.0.0.1:6379", "0.0.0.0:9000", "00080"]})");
  ASSERT_EQ(config.forward_ports.size(), 8u);
  EXPECT_EQ(config.forward_ports[0].port, 3000);
  EXPECT_EQ(config.forward_ports[0].host, "");
  EXPECT_EQ(config.forward_ports[1].port, 1);
  EXPECT_EQ(config.forward_ports[2].port, 65535);
  EXPECT_EQ(config.forward_ports[3].port, 8080);
  EXPECT_EQ(config.forward_ports[3].host, "");
  EXPECT_EQ(config.forward_ports[4].host, "localhost");
  EXPECT_EQ(config.forward_ports[4].port, 5432);
  EXPECT_EQ(config.forward_ports[5].host, "127.0.0.1");
  EXPECT_EQ(config.forward_ports[6].host, "0.0.0.0");
  EXPECT_EQ(config.forward_ports[6].port, 9000);
  EXPECT_EQ(config.forward_ports[7].port, 80);
  EXPECT_TRUE(parseOk(R"({"forwardPorts": []})").forward_ports.empty());
}

TEST(DevcontainerTest, LifecycleCommandShellString) {
  DevcontainerConfig config = parseOk(R"({"postCreateCommand": "npm install && npm run build"})");
  const LifecycleCommand& command = config.post_create_command;
  ASSERT_EQ(command.steps.size(), 1u);
  EXPECT_FALSE(command.parallel);
  EXPECT_TRUE(command.steps[0].usesShell());
  EXPECT_EQ(command.steps[0].shell_line, "npm install && npm run build");
  EXPECT_EQ(command.steps[0].name, "");
}

TEST(DevcontainerTest, LifecycleCommandEmptyStringIsNoCommand) {
  DevcontainerConfig config = parseOk(R"({"postCreateCommand": "", "postStartCommand": {}})");
  EXPECT_TRUE(config.post_create_command.empty());
  EXPECT_FALSE(config.post_create_command.parallel);
  EXPECT_TRUE(config.post_start_command.empty());
  EXPECT_FALSE(config.post_start_command.parallel);
}

TEST(DevcontainerTest, LifecycleCommandArgv) {
  DevcontainerConfig config = parseOk(R"({"postStartCommand": ["npm", "run", "", "dev"]})");
  const LifecycleCommand& command = config.post_start_command;
  ASSERT_EQ(command.steps.size(), 1u);
  EXPECT_FALSE(command.parallel);
  EXPECT_FALSE(command.steps[0].usesShell());
  EXPECT_EQ(command.steps[0].argv, (Argv{"npm", "run", "", "dev"}));
  EXPECT_EQ(command.steps[0].shell_line, "");
}

TEST(DevcontainerTest, LifecycleCommandObjectRunsInParallel) {
  DevcontainerConfig config = parseOk(R"({"postCreateCommand": {
      "server": "npm start",
      "db": ["docker", "compose", "up"],
      "skipped": ""
  }})");
  const LifecycleCommand& command = config.post_create_command;
  EXPECT_TRUE(command.parallel);
  ASSERT_EQ(command.steps.size(), 2u);
  // In key order.
  EXPECT_EQ(command.steps[0].name, "db");
  EXPECT_EQ(command.steps[0].argv, (Argv{"docker", "compose", "up"}));
  EXPECT_EQ(command.steps[1].name, "server");
  EXPECT_EQ(command.steps[1].shell_line, "npm start");
  EXPECT_TRUE(command.steps[1].usesShell());
}

TEST(DevcontainerTest, LifecycleCommandObjectOfEmptyStringsIsNoCommand) {
  DevcontainerConfig config = parseOk(R"({"postStartCommand": {"a": ""}})");
  EXPECT_TRUE(config.post_start_command.empty());
  EXPECT_FALSE(config.post_start_command.parallel);
}

TEST(DevcontainerTest, KnownAndUnknownFieldsAreIgnoredSortedAsWritten) {
  DevcontainerConfig config = parseOk(R"({
    "image": "x",
    "features": {"ghcr.io/devcontainers/features/node:1": {}},
    "customizations": {"vscode": {"extensions": ["ms-python.python"]}},
    "dockerFile": "Dockerfile",
    "build": {"dockerfile": "Dockerfile", "args": {"A": 1}},
    "mounts": ["source=x,target=/y,type=volume"],
    "runArgs": ["--privileged"],
    "postAttachCommand": 42,
    "remoteEnv": null,
    "workspaceFolder": "/w",
    "shutdownAction": "none",
    "hostRequirements": {"cpus": 4},
    "$schema": "https://x",
    "someFutureField": [1, {"deep": true}]
  })");
  EXPECT_EQ(config.image, "x");
  EXPECT_EQ(config.ignored_fields,
            (std::vector<std::string>{"$schema", "build", "customizations", "dockerFile",
                                      "features", "hostRequirements", "mounts", "postAttachCommand",
                                      "remoteEnv", "runArgs", "shutdownAction", "someFutureField",
                                      "workspaceFolder"}));
}

TEST(DevcontainerTest, IgnoredFieldsMayHoldAnything) {
  // Deep (within the limit), odd types, NUL: none of it is applied.
  DevcontainerConfig config =
      parseOk(R"({"runArgs": [[[[[["\u0000"]]]]]], "init": true, "privileged": 1e300})");
  EXPECT_EQ(config.ignored_fields, (std::vector<std::string>{"init", "privileged", "runArgs"}));
}

TEST(DevcontainerTest, VsCodePythonTemplate) {
  // As written by VS Code's "Add Dev Container Configuration Files", then edited.
  DevcontainerConfig config = parseOk(
      R"(// For format details, see https://aka.ms/devcontainer.json. For config options, see the
// README at: https://github.com/devcontainers/templates/tree/main/src/python
{
	"name": "Python 3",
	// Or use a Dockerfile or Docker Compose file. More info: https://containers.dev/guide/dockerfile
	"image": "mcr.microsoft.com/devcontainers/python:1-3.12-bullseye",

	// Features to add to the dev container. More info: https://containers.dev/features.
	"features": {
		"ghcr.io/devcontainers/features/node:1": {"version": "lts"},
	},

	// Use 'forwardPorts' to make a list of ports inside the container available locally.
	"forwardPorts": [8000, "localhost:5678"],

	"containerEnv": {
		"PYTHONUNBUFFERED": "1", // see output at once
		"PIP_INDEX_URL": "https://pypi.example/simple/"
	},

	// Use 'postCreateCommand' to run commands after the container is created.
	"postCreateCommand": "pip3 install --user -r requirements.txt",

	/* Run on every start:
	   the dev server and the worker. */
	"postStartCommand": {
		"server": ["python", "-m", "http.server", "8000"],
		"worker": "celery -A app worker",
	},

	// Configure tool-specific properties.
	"customizations": {
		"vscode": {
			"extensions": ["ms-python.python", "ms-python.vscode-pylance"],
			"settings": {"python.defaultInterpreterPath": "/usr/local/bin/python"},
		},
	},

	// Uncomment to connect as root instead. More info: https://aka.ms/dev-containers-non-root.
	// "remoteUser": "root"
	"remoteUser": "vscode",
}
)");
  EXPECT_EQ(config.name, "Python 3");
  EXPECT_EQ(config.image, "mcr.microsoft.com/devcontainers/python:1-3.12-bullseye");
  ASSERT_EQ(config.forward_ports.size(), 2u);
  EXPECT_EQ(config.forward_ports[0].port, 8000);
  EXPECT_EQ(config.forward_ports[1].host, "localhost");
  EXPECT_EQ(config.forward_ports[1].port, 5678);
  EXPECT_EQ(config.container_env.size(), 2u);
  EXPECT_EQ(config.container_env.at("PIP_INDEX_URL"), "https://pypi.example/simple/");
  ASSERT_EQ(config.post_create_command.steps.size(), 1u);
  EXPECT_EQ(config.post_create_command.steps[0].shell_line,
            "pip3 install --user -r requirements.txt");
  EXPECT_TRUE(config.post_start_command.parallel);
  ASSERT_EQ(config.post_start_command.steps.size(), 2u);
  EXPECT_EQ(config.post_start_command.steps[0].argv, (Argv{"python", "-m", "http.server", "8000"}));
  EXPECT_EQ(config.remote_user, "vscode");
  EXPECT_EQ(config.ignored_fields, (std::vector<std::string>{"customizations", "features"}));
}

// --- refusals: the file as a whole ---

TEST(DevcontainerErrorTest, TextDropsEmptyParts) {
  EXPECT_EQ(
      (DevcontainerError{4, "forwardPorts[2]", "must be a port number from 1 to 65535"}.text()),
      "line 4: forwardPorts[2]: must be a port number from 1 to 65535");
  EXPECT_EQ((DevcontainerError{3, "", "unterminated string"}.text()),
            "line 3: unterminated string");
  EXPECT_EQ((DevcontainerError{0, "", "the file is empty"}.text()), "the file is empty");
  EXPECT_EQ((DevcontainerError{0, "name", "must be a string"}.text()), "name: must be a string");
}

TEST(DevcontainerErrorTest, EmptyFile) {
  for (const char* text : {"", "   \n\t\r\n", "// only a comment\n/* and another */"}) {
    DevcontainerError error = parseError(text);
    EXPECT_EQ(error.line, 0) << text;
    EXPECT_EQ(error.field, "");
    EXPECT_EQ(error.text(), "the file is empty");
  }
}

TEST(DevcontainerErrorTest, SizeLimit) {
  std::string text = "{\"name\": \"" + std::string(kMaxDevcontainerSize, 'x') + "\"}";
  DevcontainerError error = parseError(text);
  EXPECT_EQ(error.line, 0);
  EXPECT_EQ(error.text(), "the file is larger than 1048576 bytes");
  // Exactly at the limit is fine.
  std::string at_limit = "{\"name\": \"\"}";
  at_limit.insert(1, kMaxDevcontainerSize - at_limit.size(), ' ');
  ASSERT_EQ(at_limit.size(), kMaxDevcontainerSize);
  parseOk(at_limit);
}

TEST(DevcontainerErrorTest, DeepNesting) {
  // 64 levels in all are fine; the 65th bracket is refused on its line.
  std::string ok = "{\"x\":" + std::string(63, '[') + std::string(63, ']') + "}";
  parseOk(ok);
  std::string deep = "{\"x\":\n\n" + std::string(64, '[') + std::string(64, ']') + "}";
  DevcontainerError error = parseError(deep);
  EXPECT_EQ(error.line, 3);
  EXPECT_EQ(error.text(), "line 3: nesting deeper than 64 levels");
  // Brackets in strings and comments do not count.
  parseOk("{\"x\": \"" + std::string(100, '[') + "\" /*" + std::string(100, '{') + "*/}");
  // Far too deep for a recursive parser to survive.
  EXPECT_EQ(parseError(std::string(500000, '[')).line, 1);
}

TEST(DevcontainerErrorTest, SyntaxErrorsNameTheirLine) {
  DevcontainerError error = parseError("{\n  \"name\": \"x\"\n  \"image\": \"y\"\n}");
  EXPECT_EQ(error.line, 3);
  EXPECT_EQ(error.field, "");
  EXPECT_NE(error.message.find("syntax error"), std::string::npos) << error.message;
  EXPECT_EQ(error.message.find("[json.exception"), std::string::npos) << error.message;

  EXPECT_EQ(parseError("{\n\"a\": tru\n}").line, 2);
  EXPECT_EQ(parseError("{\n\"a\": 1\n").line, 3);       // unexpected end of input
  EXPECT_EQ(parseError("{\n\"a\": [1,,]\n}").line, 2);  // a comma after a comma
  EXPECT_EQ(parseError("[,]").line, 1);
  EXPECT_EQ(parseError("{\"a\": 'single'}").line, 1);
  EXPECT_EQ(parseError("{}\n{}").line, 2);
  EXPECT_EQ(parseError("{} / {}").line, 1);
  EXPECT_EQ(parseError("{\n\n\"a\": 1e999}").line, 3);  // number overflow
  EXPECT_EQ(parseError("\n{\"a\": \"\t\"}").line, 2);   // a raw control character
  EXPECT_EQ(parseError("{\"a\": \"\\x\"}").line, 1);    // a bad escape
}

TEST(DevcontainerErrorTest, UnterminatedStringOrComment) {
  EXPECT_EQ(parseError("{\n\"name\": \"x\n\"}").text(),
            "line 2: unterminated string (it must end on its line)");
  EXPECT_EQ(parseError("{\n\n/* never closed }").text(), "line 3: unterminated block comment");
}

TEST(DevcontainerErrorTest, BadBytesDoNotCrashAndStayOutOfTheMessage) {
  for (std::string text :
       {std::string("{\"name\": \"\xff\xfe\"}"), std::string("{\"a\xc3\": 1}"),
        std::string("{\x01}"), "{\"n\": 1}\0\0"s, "{\"n\": \"a\0b\"}"s, std::string("\xff")}) {
    DevcontainerError error = parseError(text);
    EXPECT_EQ(error.line, 1) << error.text();
    for (char c : error.text()) {
      EXPECT_TRUE(c >= 0x20 && c < 0x7f) << error.text();
    }
  }
}

TEST(DevcontainerErrorTest, NulBytesAreRefused) {
  // nlohmann::json would stop at the NUL and accept the object before it.
  EXPECT_EQ(parseError("{\"image\": \"a\"}\n\0{\"image\": \"b\"}"s).text(),
            "line 2: contains a NUL byte: not a text file");
  EXPECT_EQ(parseError("{\"a\": 1 // \0\n}"s).line, 1);
}

TEST(DevcontainerErrorTest, TopLevelMustBeAnObject) {
  for (const char* text : {"[]", "\"image\"", "42", "null", "\n\n  true"}) {
    DevcontainerError error = parseError(text);
    EXPECT_EQ(error.message, "the top level must be an object") << text;
    EXPECT_EQ(error.field, "");
  }
  EXPECT_EQ(parseError("// c\n\n  [1]").line, 3);
}

// --- refusals: fields ---

TEST(DevcontainerErrorTest, NameAndImageMustBeStrings) {
  DevcontainerError error = parseError("{\n  \"name\": 1\n}");
  EXPECT_EQ(error.text(), "line 2: name: must be a string");
  error = parseError("{\n\n  \"image\": {\"x\": 1}}");
  EXPECT_EQ(error.text(), "line 3: image: must be a string");
  error = parseError(R"({"image": null})");
  EXPECT_EQ(error.field, "image");
  error = parseError(R"({"image": "a\u0000b"})");
  EXPECT_EQ(error.text(), "line 1: image: must not contain a NUL character");
}

TEST(DevcontainerErrorTest, ContainerEnvShape) {
  DevcontainerError error = parseError("{\n\"containerEnv\": [\"A=1\"]}");
  EXPECT_EQ(error.line, 2);
  EXPECT_EQ(error.field, "containerEnv");

  error = parseError("{\"containerEnv\": {\n  \"OK\": \"1\",\n  \"FOO\": 1\n}}");
  EXPECT_EQ(error.text(), "line 3: containerEnv.FOO: must be a string");

  error = parseError("{\"containerEnv\": {\n  \"FOO\":\n  null}}");
  EXPECT_EQ(error.line, 3);  // the value's line
  EXPECT_EQ(error.field, "containerEnv.FOO");

  error = parseError("{\"containerEnv\": {\n\n \"FOO\": \"a\\u0000b\"}}");
  EXPECT_EQ(error.text(), "line 3: containerEnv.FOO: must not contain a NUL character");
}

TEST(DevcontainerErrorTest, ContainerEnvNames) {
  for (const char* name : {"1ABC", "A-B", "A B", "A=B", "", "É", "A.B", "A\\u0000"}) {
    DevcontainerError error =
        parseError(std::string("{\"containerEnv\": {\n\"") + name + "\"\n: \"v\"}}");
    EXPECT_EQ(error.line, 2) << name;  // the key's line
    EXPECT_EQ(error.field.rfind("containerEnv.", 0), 0u) << error.field;
    EXPECT_NE(error.message.find("not a valid environment variable name"), std::string::npos);
  }
  EXPECT_EQ(parseError(R"({"containerEnv": {"A-B": "v"}})").field, "containerEnv.A-B");
  EXPECT_EQ(parseError(R"({"containerEnv": {"": "v"}})").field, "containerEnv.\"\"");
  EXPECT_EQ(parseError(R"({"containerEnv": {"A\nB": "v"}})").field, "containerEnv.A?B");
}

TEST(DevcontainerErrorTest, ContainerEnvLimit) {
  std::string text = "{\"containerEnv\": {";
  for (int i = 0; i < 1024; ++i) text += "\"V" + std::to_string(i) + "\": \"x\",";
  EXPECT_EQ(parseOk(text + "}}").container_env.size(), 1024u);
  DevcontainerError error = parseError(text + "\"ONE_MORE\": \"x\"}}");
  EXPECT_EQ(error.text(), "line 1: containerEnv: has more than 1024 entries");
}

TEST(DevcontainerErrorTest, RemoteUser) {
  for (const char* user : {"Root", "1user", "-user", "us er", "user$$", "$", "", "user:x", "é"}) {
    DevcontainerError error = parseError(std::string("{\n\"remoteUser\": \"") + user + "\"}");
    EXPECT_EQ(error.line, 2) << user;
    EXPECT_EQ(error.field, "remoteUser");
    EXPECT_EQ(error.message.find("must be a user name"), 0u) << user;
  }
  EXPECT_EQ(parseError(R"({"remoteUser": ")" + std::string(33, 'a') + "\"}").field, "remoteUser");
  EXPECT_EQ(parseError(R"({"remoteUser": 0})").message, "must be a string");
}

TEST(DevcontainerErrorTest, ForwardPortsEntries) {
  struct Case {
    const char* entry;
    const char* message;
  };
  const char* kRange = "must be a port number from 1 to 65535";
  const char* kShape = "must be a port number or a \"host:port\" string";
  for (const Case& c : std::vector<Case>{{"0", kRange},
                                         {"65536", kRange},
                                         {"-1", kRange},
                                         {"80.5", kRange},
                                         {"1e3", kRange},
                                         {"18446744073709551615", kRange},
                                         {"\"0\"", kRange},
                                         {"\"99999999999999999999\"", kRange},
                                         {"\"localhost:0\"", kRange},
                                         {"\"localhost:70000\"", kRange},
                                         {"\"\"", kShape},
                                         {"\"http\"", kShape},
                                         {"\"localhost:\"", kShape},
                                         {"\"localhost:+80\"", kShape},
                                         {"\" 80\"", kShape},
                                         {"\"80 \"", kShape},
                                         {"true", kShape},
                                         {"null", kShape},
                                         {"[80]", kShape},
                                         {"{\"port\": 80}", kShape}}) {
    DevcontainerError error = parseError(
        std::string("{\"forwardPorts\": [\n  3000,\n  \"8080\",\n  ") + c.entry + "\n]}");
    EXPECT_EQ(error.line, 4) << c.entry;
    EXPECT_EQ(error.field, "forwardPorts[2]") << c.entry;
    EXPECT_EQ(error.message, c.message) << c.entry;
  }
}

TEST(DevcontainerErrorTest, ForwardPortsHostMustBeTheMachine) {
  for (const char* entry : {"db:5432", "example.com:80", "[::1]:80", ":80", "LOCALHOST:80",
                            "127.0.0.2:80", "localhost:localhost:80"}) {
    DevcontainerError error = parseError(std::string("{\"forwardPorts\": [\"") + entry + "\"]}");
    EXPECT_EQ(error.field, "forwardPorts[0]") << entry;
    EXPECT_EQ(error.message.find("the host must be localhost, 127.0.0.1 or 0.0.0.0"), 0u)
        << error.message;
  }
}

TEST(DevcontainerErrorTest, ForwardPortsShapeAndLimit) {
  EXPECT_EQ(parseError("{\n\"forwardPorts\": 3000}").text(),
            "line 2: forwardPorts: must be an array");
  EXPECT_EQ(parseError(R"({"forwardPorts": "3000"})").field, "forwardPorts");
  std::string text = "{\"forwardPorts\": [";
  for (int i = 1; i <= 256; ++i) text += std::to_string(i) + ",";
  EXPECT_EQ(parseOk(text + "]}").forward_ports.size(), 256u);
  EXPECT_EQ(parseError(text + "257]}").text(), "line 1: forwardPorts: has more than 256 entries");
}

TEST(DevcontainerErrorTest, LifecycleCommandShapes) {
  for (const char* value : {"42", "true", "null", "1.5"}) {
    DevcontainerError error = parseError(std::string("{\n\n\"postCreateCommand\": ") + value + "}");
    EXPECT_EQ(error.line, 3);
    EXPECT_EQ(error.field, "postCreateCommand");
    EXPECT_EQ(error.message.find("must be a string (a shell command), an array"), 0u);
  }
}

TEST(DevcontainerErrorTest, LifecycleCommandArgv) {
  EXPECT_EQ(parseError("{\"postStartCommand\":\n[]}").text(),
            "line 2: postStartCommand: must name a program (an empty array runs nothing)");
  EXPECT_EQ(parseError("{\"postStartCommand\": [\n\"\", \"x\"]}").text(),
            "line 2: postStartCommand[0]: the program must not be empty");
  EXPECT_EQ(parseError("{\"postStartCommand\": [\"npm\",\n 1]}").text(),
            "line 2: postStartCommand[1]: must be a string");
  EXPECT_EQ(parseError(R"({"postCreateCommand": ["npm", ["x"]]})").field, "postCreateCommand[1]");
  EXPECT_EQ(parseError(R"({"postCreateCommand": ["np\u0000m"]})").text(),
            "line 1: postCreateCommand[0]: must not contain a NUL character");
  EXPECT_EQ(parseError(R"({"postCreateCommand": "a\u0000b"})").field, "postCreateCommand");
}

TEST(DevcontainerErrorTest, LifecycleCommandObject) {
  DevcontainerError error =
      parseError("{\"postStartCommand\": {\n  \"web\": \"npm start\",\n  \"db\": 5\n}}");
  EXPECT_EQ(error.text(),
            "line 3: postStartCommand.db: must be a string (a shell command) or an array (a "
            "program and its arguments)");
  EXPECT_EQ(parseError("{\"postStartCommand\": {\"db\":\n {\"nested\": \"x\"}}}").field,
            "postStartCommand.db");
  EXPECT_EQ(parseError("{\"postStartCommand\": {\"db\":\n []}}").text(),
            "line 2: postStartCommand.db: must name a program (an empty array runs nothing)");
  EXPECT_EQ(parseError("{\"postCreateCommand\": {\"db\": [\"x\",\n\n null]}}").text(),
            "line 3: postCreateCommand.db[1]: must be a string");
  EXPECT_EQ(parseError("{\"postCreateCommand\": {\n\"\": \"x\"}}").text(),
            "line 2: postCreateCommand.\"\": a command's name must not be empty");
  // Found by devcontainer_fuzzer: a NUL in a name came through.
  EXPECT_EQ(parseError("{\"postCreateCommand\": {\n\"a\\u0000b\": \"x\"}}").text(),
            "line 2: postCreateCommand.a?b: a command's name must not contain a NUL character");
}

TEST(DevcontainerErrorTest, LifecycleCommandStepLimit) {
  std::string text = "{\"postCreateCommand\": {";
  for (int i = 0; i < 64; ++i) text += "\"s" + std::to_string(i) + "\": \"true\",";
  EXPECT_EQ(parseOk(text + "}}").post_create_command.steps.size(), 64u);
  EXPECT_EQ(parseError(text + "\"s64\": \"true\"}}").text(),
            "line 1: postCreateCommand: has more than 64 commands");
}

TEST(DevcontainerErrorTest, LineOfANestedValueIgnoresLookalikes) {
  // The same key text earlier in a string, a comment, an ignored field and
  // another object must not be taken for the field.
  DevcontainerError error = parseError(R"({
  "name": "\"forwardPorts\": [0]",
  // "forwardPorts": [0]
  "customizations": {"forwardPorts": [0]},
  "forwardPorts": [
    80,
    "x:1"
  ]
})");
  EXPECT_EQ(error.line, 7);
  EXPECT_EQ(error.field, "forwardPorts[1]");
}

TEST(DevcontainerErrorTest, LineOfAKeyWrittenWithEscapes) {
  DevcontainerError error = parseError("{\"contain\\u0065rEnv\": {\n\"A\": 1}}");
  EXPECT_EQ(error.text(), "line 2: containerEnv.A: must be a string");
}

TEST(DevcontainerErrorTest, DuplicateKeysTheLastCounts) {
  // nlohmann::json keeps the last of duplicate keys; the line follows it.
  DevcontainerError error = parseError("{\"name\": \"ok\",\n\"name\": 1}");
  EXPECT_EQ(error.text(), "line 2: name: must be a string");
  EXPECT_EQ(parseOk("{\"name\": 1,\n\"name\": \"ok\"}").name, "ok");
}

TEST(DevcontainerErrorTest, LongKeysAreCutInTheField) {
  std::string key(1000, 'K');
  key[0] = '-';
  DevcontainerError error = parseError("{\"containerEnv\": {\"" + key + "\": \"v\"}}");
  EXPECT_LT(error.field.size(), 120u);
  EXPECT_EQ(error.field.substr(error.field.size() - 3), "...");
  // Not in the middle of a UTF-8 sequence: byte 80 is the second of an "é".
  std::string wide = "a";
  for (int i = 0; i < 100; ++i) wide += "é";
  error = parseError("{\"containerEnv\": {\"" + wide + "\": \"v\"}}");
  EXPECT_EQ(error.field, "containerEnv." + wide.substr(0, 79) + "...");
}

TEST(DevcontainerErrorTest, ConfigUntouchedOnError) {
  DevcontainerConfig config;
  config.name = "before";
  DevcontainerError error;
  EXPECT_FALSE(parseDevcontainer(R"({"name": "after", "forwardPorts": [0]})", config, error));
  EXPECT_EQ(config.name, "before");
}

}  // namespace
}  // namespace spacegate
