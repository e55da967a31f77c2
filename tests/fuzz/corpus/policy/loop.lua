setmetatable({}, {__index = function() while true do end end}).x = 1
