namespace KvFetcher.Store.Redis;

public sealed partial class RedisKvStore
{
    // Every key a script touches carries the object's hash tag, so in a cluster it runs on the one node that owns
    // the object. Part keys of an old version are derived from the manifest it replaces (offsets as in RedisManifest).
    private const string DropPartsFunction =
        """
        local function dropParts(head, partPrefix)
          if string.len(head) < 64 or string.sub(head, 1, 8) ~= 'KVFRMAN1' then return end
          local b1, b2, b3, b4 = string.byte(head, 21, 24)
          local count = b1 + b2 * 256 + b3 * 65536 + b4 * 16777216
          if count > 65536 then return end
          local version = string.format('%02x%02x%02x%02x%02x%02x%02x%02x', string.byte(head, 25, 32))
          for i = 0, count - 1 do
            redis.call('UNLINK', partPrefix .. version .. ':' .. i)
          end
        end

        """;

    /// <summary>
    /// Commits a put. KEYS[1] the manifest, KEYS[2..] the new version's parts (written with a short lifetime);
    /// ARGV: manifest value, manifest TTL ms (0: none), parts' TTL ms (0: none), the object's part key prefix.
    /// Makes the parts last, swaps the manifest in, then drops the replaced version's parts.
    /// </summary>
    private const string CommitScript = DropPartsFunction +
        """
        local manifestTtl = tonumber(ARGV[2])
        local partTtl = tonumber(ARGV[3])
        for i = 2, #KEYS do
          if redis.call('EXISTS', KEYS[i]) == 0 then
            return redis.error_reply('ERR part ' .. KEYS[i] .. ' is missing at commit (its write failed, or it expired first)')
          end
          if partTtl > 0 then redis.call('PEXPIRE', KEYS[i], partTtl) else redis.call('PERSIST', KEYS[i]) end
        end
        local old = redis.call('GETRANGE', KEYS[1], 0, 63)
        if manifestTtl > 0 then
          redis.call('SET', KEYS[1], ARGV[1], 'PX', manifestTtl)
        else
          redis.call('SET', KEYS[1], ARGV[1])
        end
        dropParts(old, ARGV[4])
        return 1
        """;

    /// <summary>
    /// Drops the parts named by a replaced manifest head. KEYS[1] the object's manifest (it routes the script to the
    /// object's slot); ARGV: the object's part key prefix, the replaced head.
    /// </summary>
    private const string DropPartsScript = DropPartsFunction +
        """
        dropParts(ARGV[2], ARGV[1])
        return 1
        """;

    /// <summary>
    /// Removes an object. KEYS[1] the manifest; ARGV: the object's part key prefix, '1' to remove only while the
    /// manifest still starts with ARGV[3] (a reader's view of a corrupt object) else '0', that head.
    /// Returns 1 when it removed the object.
    /// </summary>
    private const string RemoveScript = DropPartsFunction +
        """
        if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
        local head = redis.call('GETRANGE', KEYS[1], 0, 63)
        if ARGV[2] == '1' and head ~= ARGV[3] then return 0 end
        dropParts(head, ARGV[1])
        redis.call('UNLINK', KEYS[1])
        return 1
        """;
}
