-- DP 版：気管切開までの平均月数（発症から、0–240 に制限）：性別
-- DP version: mean months from onset to tracheostomy (clamped to 0–240), by sex.
SELECT
    p.sex,
    count(DISTINCT e.pid) AS patients,
    avg(e.months_since_onset) AS mean_months_to_tracheostomy
FROM als_event AS e
JOIN patient AS p ON p.pid = e.pid
WHERE e.event_type = 'tracheostomy'
GROUP BY p.sex
ORDER BY p.sex
