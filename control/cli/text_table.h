// Aligned columns for spacegatectl's human output (`routes list`,
// `gitspace list`, ...): every column as wide as its widest cell plus two.
#pragma once

#include <string>
#include <vector>

namespace spacegate {

// Prints rows (the first is usually the header) to stdout.
void printTable(const std::vector<std::vector<std::string>>& rows);

}  // namespace spacegate
