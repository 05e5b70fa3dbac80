#include "runner/agent/devcontainer.h"
