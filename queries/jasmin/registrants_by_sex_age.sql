-- JaSMIn annual report (seed 000): registrants by sex and 5-year age band (the seed reports
-- 55 % male, a median age of 18.2 and 55.8 % under 20). Sex comes from `patient`; a
-- registrant whose sex is not recorded has no row here (the seed's "不明").
-- JaSMIn 年次報告: 性別・年齢（5 歳階級）別登録者数
SELECT p.sex, r.age_band, COUNT(DISTINCT r.pid) AS registrants
FROM jasmin_registrant r
JOIN patient p ON p.pid = r.pid
GROUP BY p.sex, r.age_band
ORDER BY p.sex, r.age_band
