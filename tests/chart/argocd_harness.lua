-- Runs an Argo CD Lua customization (health.lua, discovery.lua or action.lua) the way Argo CD does:
-- `obj` is a global holding the live object, the script runs in a sandbox with the safe standard
-- libraries only (no io, no os except time/date), and its return value is printed as JSON.
-- Usage: lua5.4 argocd_harness.lua SCRIPT OBJECT_LUA [EPOCH_SECONDS]
--   OBJECT_LUA is a Lua file that returns the object as a table; EPOCH_SECONDS fixes os.time/os.date.

local script_path, object_path, epoch = arg[1], arg[2], tonumber(arg[3])

local function encode(value, out)
  local t = type(value)
  if t == "nil" then
    out[#out + 1] = "null"
  elseif t == "boolean" then
    out[#out + 1] = tostring(value)
  elseif t == "number" then
    if math.type(value) == "integer" then
      out[#out + 1] = string.format("%d", value)
    else
      out[#out + 1] = string.format("%.17g", value)
    end
  elseif t == "string" then
    out[#out + 1] = '"' .. value:gsub('[%c"\\]', function(c)
      return string.format("\\u%04x", c:byte())
    end) .. '"'
  elseif t == "table" then
    local n, count = #value, 0
    for _ in pairs(value) do count = count + 1 end
    if count > 0 and count == n then
      out[#out + 1] = "["
      for i = 1, n do
        if i > 1 then out[#out + 1] = "," end
        encode(value[i], out)
      end
      out[#out + 1] = "]"
    else
      local keys = {}
      for k in pairs(value) do keys[#keys + 1] = tostring(k) end
      table.sort(keys)
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        if i > 1 then out[#out + 1] = "," end
        encode(k, out)
        out[#out + 1] = ":"
        local v = value[k]
        if v == nil then v = value[tonumber(k)] end
        encode(v, out)
      end
      out[#out + 1] = "}"
    end
  else
    error("cannot encode a " .. t)
  end
end

local function json(value)
  local out = {}
  encode(value, out)
  return table.concat(out)
end

local safe_os = {
  time = function(t) if t == nil and epoch then return epoch end return os.time(t) end,
  date = function(fmt, t) return os.date(fmt, t or epoch) end,
}
local env = {
  obj = dofile(object_path),
  assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs, pcall = pcall,
  select = select, tonumber = tonumber, tostring = tostring, type = type, unpack = table.unpack,
  string = string, table = table, math = math, os = safe_os,
}
local source = assert(io.open(script_path)):read("a")
local chunk = assert(load(source, "@" .. script_path, "t", env))
local ok, result = pcall(chunk)
if ok then
  print(json({result = result}))
else
  print(json({error = tostring(result)}))
end
