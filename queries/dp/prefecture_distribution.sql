-- DP 版：都道府県別の患者数（申請都道府県）
-- DP version: patients by prefecture of application. Rates per 100,000 are computed from
-- the released noisy counts and the public `prefecture` table afterwards.
SELECT
    s.prefecture_code,
    count(DISTINCT s.pid) AS patients
FROM nanbyo_survey AS s
GROUP BY s.prefecture_code
ORDER BY s.prefecture_code
